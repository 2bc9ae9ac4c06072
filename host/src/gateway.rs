//! Gateway wiring: builds every box of the message path from the
//! configuration — the spool, DNS, the outbound client's trust roots, the
//! policy engine and chain with its reloader, the queue, the admin socket
//! and the session recorder — and hands them to the listeners
//! ([`crate::server`]). It is the only module that knows all of them;
//! `main.rs` only parses the command line and calls [`Gateway::start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::budget::MemoryBudget;
use crate::config::{Config, RecordMode};
use crate::delivery::client::{ClientConfig, Timeouts};
use crate::gate::BuiltIn;
use crate::policy::{Engine, KvStore, LiveChain, PolicyError, Reloader, Services};
use crate::queue::{Queue, QueueError, QueueParts};
use crate::record::Recorder;
use crate::server::{Listeners, Server, ServerError, ServerParts};
use crate::spool::{FsSpool, Spool, SpoolError};

/// Start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener could not bind, or TLS could not be set up.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The queue could not load the spool.
    #[error(transparent)]
    Queue(#[from] QueueError),
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
    Policy(#[from] PolicyError),
    /// The recording writer could not start.
    #[error("cannot start the session recorder: {0}")]
    Record(std::io::Error),
    /// The data folder or the compiled policy cache is not ours alone.
    #[error(transparent)]
    Private(#[from] crate::private::PrivateDirError),
}

/// A started gateway: listeners bound, spool open, policies loaded.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    server: Server,
    queue: Queue,
    admin: tokio::net::UnixListener,
    reloader: Arc<Reloader>,
    recorder: Option<Arc<Recorder>>,
}

impl Gateway {
    /// Open the spool, bind every listener, load the policies, start
    /// nothing yet. `config_path` is the file `config` was read from:
    /// reloads (SIGHUP, `sluice policy reload`, a change of the file) read
    /// it again.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Self, GatewayError> {
        // Mail, the spool and the admin socket are for this user only.
        if crate::private::ensure(&config.data_dir)? {
            tracing::warn!(data_dir = %config.data_dir.display(), "data folder was open to other users: narrowed to 0700");
        }
        let (spool, recovery) = FsSpool::open(
            &config.data_dir,
            config.spool.group_commit,
            config.spool.max_batch,
        )?;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            messages = recovery.messages,
            removed_partial = recovery.removed,
            set_aside = recovery.set_aside,
            group_commit = config.spool.group_commit,
            "spool open"
        );
        raise_fd_limit(config.limits.max_connections);
        let listeners = Listeners::bind(&config).await?;
        let spool: Arc<dyn Spool> = Arc::new(spool);
        let resolver =
            crate::dns::from_config(&config.dns).map_err(|e| GatewayError::Dns(e.to_string()))?;
        let roots = crate::delivery::client::load_roots(config.delivery.ca_file.as_deref())
            .map_err(|e| GatewayError::ClientTls(e.to_string()))?;
        let client = ClientConfig {
            helo_name: config.hostname.clone(),
            connect_timeout: config.delivery.connect_timeout,
            timeouts: Timeouts::default(),
            tls_roots: Arc::new(roots),
        };
        // Policies are compiled (or taken from the compiled cache) and
        // initialised before the first session; a policy that fails to
        // load stops the start with a message naming it.
        let services = Services {
            resolver: resolver.clone(),
            kv: Arc::new(KvStore::new(1_000_000, 256 << 20)),
        };
        let (engine, chain) = if config.policies.is_empty() {
            (None, None)
        } else {
            // Compiled code in the cache runs as trusted: ours alone.
            crate::private::ensure(&config.policy_engine.cache_dir)?;
            let engine = Engine::serving(&config, &config.policies)?;
            let chain = engine
                .load_chain(&config.policies, services.clone())
                .await?;
            for s in chain.stats() {
                tracing::info!(policy = %s.name, version = %s.version, "policy loaded");
            }
            (Some(engine), Some(chain))
        };
        let chain = Arc::new(LiveChain::new(chain));
        let reloader = Arc::new(Reloader::new(
            chain.clone(),
            engine,
            services,
            config_path,
            config.clone(),
        ));
        // One budget for the message octets sessions, their recordings and
        // the queue hold.
        let budget = MemoryBudget::new(
            usize::try_from(config.limits.max_message_memory.0).unwrap_or(usize::MAX),
        );
        let queue = Queue::new(QueueParts {
            budget: budget.clone(),
            spool: spool.clone(),
            config: config.clone(),
            resolver,
            client,
            self_addrs: listeners.local_addrs(),
            chain: chain.clone(),
        })?;
        let admin = crate::admin::bind(&config.data_dir)?;
        let recorder = if config.listeners.iter().any(|l| l.record != RecordMode::Off) {
            Some(Arc::new(
                Recorder::start(&config.record, budget.clone()).map_err(GatewayError::Record)?,
            ))
        } else {
            None
        };
        let server = listeners.serve(ServerParts {
            rules: Arc::new(BuiltIn::from_config(&config).with_disk(&config)),
            spool,
            queue: queue.clone(),
            chain,
            recorder: recorder.clone(),
            budget,
            config: config.clone(),
        });
        Ok(Self {
            config,
            server,
            queue,
            admin,
            reloader,
            recorder,
        })
    }

    /// What reloads the policies (for SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// The bound addresses, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server.local_addrs()
    }

    /// Serve until `shutdown` becomes true; then stop accepting, tell idle
    /// sessions `421 4.3.0`, let messages in flight finish (bounded by
    /// `shutdown_timeout`), write what was recorded and return.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let queue_task = tokio::spawn(self.queue.clone().run(shutdown.clone()));
        let admin_task = tokio::spawn(crate::admin::serve(
            self.admin,
            self.queue.clone(),
            self.reloader.clone(),
            shutdown.clone(),
        ));
        if self.config.policy_engine.watch {
            tokio::spawn(crate::policy::watch(
                self.reloader.clone(),
                self.config.clone(),
                shutdown.clone(),
            ));
        }
        self.server.run(shutdown).await;
        if let Some(recorder) = self.recorder {
            // Sessions have ended: write what they recorded.
            let _ =
                tokio::task::spawn_blocking(move || recorder.flush(Duration::from_secs(10))).await;
        }
        let _ = admin_task.await;
        let _ = queue_task.await;
    }
}

/// Raise the open-file limit as far as the hard limit allows (each
/// connection is a descriptor, an outbound delivery another), and say in
/// the log what was got.
fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let before = lim.current;
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            lim.current = before;
        }
    }
    let got = lim.current.unwrap_or(u64::MAX);
    // A connection, an outbound connection per delivery, the spool, logs.
    let wanted = max_connections as u64 + 1024;
    if got < wanted {
        tracing::warn!(
            open_files = got,
            max_connections,
            "the open-file limit is below max_connections + 1024: connections past it will fail to be accepted"
        );
    } else {
        tracing::info!(open_files = got, before = ?before, "open-file limit");
    }
}
