//! Listeners and connections: TCP accept loops, connection caps, TLS,
//! PROXY protocol, graceful shutdown, and the per-connection driver that
//! runs an [`crate::smtp::Session`] over a socket through the stage gate
//! ([`crate::gate`]). What a connection serves with (spool, queue,
//! chain, recorder) is built by [`crate::gateway`] and handed in as
//! [`ServerParts`].

pub mod admission;
mod conn;
pub mod proxy;
mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::budget::MemoryBudget;
use crate::config::{Config, ListenerConfig};
use crate::gate::BuiltIn;
use crate::policy::LiveChain;
use crate::queue::Queue;
use crate::record::Recorder;
use crate::smtp::reply::std_replies;
use crate::spool::Spool;

/// Listener start-up errors.
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
}

/// What the listeners serve with, built by the gateway.
#[derive(Debug)]
pub struct ServerParts {
    /// The configuration.
    pub config: Config,
    /// The built-in rules of the stage gate.
    pub rules: Arc<BuiltIn>,
    /// Where accepted messages go.
    pub spool: Arc<dyn Spool>,
    /// Told of each message spooled.
    pub queue: Queue,
    /// The policy chain new sessions get (swapped by reloads).
    pub chain: Arc<LiveChain>,
    /// The session recorder; `None` when no listener records.
    pub recorder: Option<Arc<Recorder>>,
    /// The message memory budget, shared with the queue.
    pub budget: Arc<MemoryBudget>,
}

/// Everything a connection needs, shared.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) rules: Arc<BuiltIn>,
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) tls: TlsAcceptor,
    /// Who gets a connection slot (caps, reserve, stress, shedding).
    pub(crate) admission: Arc<admission::Admission>,
    /// The octets of messages the sessions may hold together.
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) queue: Queue,
    /// The policy chain new sessions get (swapped by reloads).
    pub(crate) chain: Arc<LiveChain>,
    /// The session recorder; `None` when no listener records.
    pub(crate) recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

/// Bound listeners and the TLS they serve with, not yet serving.
pub struct Listeners {
    tls: TlsAcceptor,
    bound: Vec<(TcpListener, ListenerConfig)>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl Listeners {
    /// Load TLS (a self-signed certificate when none is configured) and
    /// bind every configured listener.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let (tls_config, self_signed) = tls::server_config(config.tls.as_ref(), &config.hostname)?;
        if self_signed {
            tracing::warn!(
                hostname = %config.hostname,
                "no [tls] certificate configured: using a self-signed certificate made at start"
            );
        }
        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket =
                TcpListener::bind(l.address)
                    .await
                    .map_err(|source| ServerError::Bind {
                        address: l.address,
                        source,
                    })?;
            bound.push((socket, l.clone()));
        }
        Ok(Self {
            tls: TlsAcceptor::from(tls_config),
            bound,
        })
    }

    /// The bound addresses, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Ready to serve with `parts`.
    pub fn serve(self, parts: ServerParts) -> Server {
        let limits = &parts.config.limits;
        let shared = Arc::new(Shared {
            admission: admission::Admission::new(limits),
            budget: parts.budget,
            recorder: parts.recorder,
            rules: parts.rules,
            queue: parts.queue,
            chain: parts.chain,
            spool: parts.spool,
            tls: self.tls,
            config: parts.config,
        });
        Server {
            shared,
            listeners: self.bound,
        }
    }
}

/// Listeners ready to serve.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, ListenerConfig)>,
}

impl Server {
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
        // Every open connection holds a slot: none open means every
        // session has ended.
        let grace = self.shared.config.limits.shutdown_timeout;
        let ended = tokio::time::timeout(grace, async {
            while self.shared.admission.open() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        match ended {
            Ok(()) => tracing::info!("all sessions ended"),
            Err(_) => tracing::warn!(
                open = self.shared.admission.open(),
                "shutdown timeout: closing sessions still open"
            ),
        }
    }

    /// Who gets a connection slot, and what was refused.
    pub fn admission(&self) -> &Arc<admission::Admission> {
        &self.shared.admission
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
        // The reserved share is for relay clients seen directly; behind a
        // proxy the peer is the proxy, not the client.
        let relay = !cfg.proxy_protocol && shared.rules.access.may_relay(peer.ip());
        match shared.admission.connect(peer.ip().to_canonical(), relay) {
            Ok(slot) => {
                let shared = shared.clone();
                let cfg = cfg.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    conn::handle(stream, peer, slot, cfg, shared, shutdown).await;
                });
            }
            Err(_) => {
                tokio::spawn(refuse(stream, std_replies::too_many_connections()));
            }
        }
    }
    tracing::info!(address = %cfg.address, "listener stopped");
}

/// Say a 421 and close, without waiting long for a slow peer.
pub(crate) async fn refuse(
    mut stream: impl tokio::io::AsyncWrite + Unpin,
    reply: crate::smtp::Reply,
) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&reply.to_wire()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
