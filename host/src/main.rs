//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A programmable SMTP mail gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (on the embedded default config without --config).
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format, overriding [log] format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check a configuration file and exit (0 when it is valid).
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Print the embedded default configuration, every key documented.
    DefaultConfig,
}

fn init_logs(cfg: &Config, format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format.unwrap_or(cfg.log.format) {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Option<PathBuf>, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let cfg = match &config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    init_logs(&cfg, log_format);
    match &config {
        Some(p) => tracing::info!(config = %p.display(), "starting"),
        None => tracing::info!("starting on the embedded default config"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let server = sluice::server::Server::bind(cfg).await?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Install the handlers before serving, so a signal that comes at
        // once still means "shut down cleanly", never the default action.
        let signals = Signals::install().context("installing signal handlers")?;
        tokio::spawn(async move {
            let signal = signals.wait().await;
            tracing::info!(
                signal,
                "shutting down: no new connections, finishing messages in flight"
            );
            let _ = tx.send(true);
        });
        server.run(rx).await;
        tracing::info!("stopped");
        Ok(())
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|_| println!("{}: ok", file.display()))
            .map_err(Into::into),
        Command::DefaultConfig => {
            print!("{}", sluice::config::DEFAULT_TOML);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
