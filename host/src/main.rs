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
    /// Look at and act on the queue of a running gateway (through its
    /// admin socket in the data folder).
    Queue {
        /// The gateway's configuration file (for its data folder).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Work with policy components.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Replay recorded sessions against a policy chain, with no network,
    /// and print which stages change (exit 0; 1 with --fail-on-diff and a
    /// change; 2 when a session cannot be read or replayed).
    Replay(ReplayArgs),
    /// Run a folder of session cases (*.smtp transcripts, *.jsonl
    /// recordings) as a policy's test suite (exit 1 on a failure).
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The gateway config: the chain and the gateway rules (embedded
    /// default without it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Replace the component of policy NAME (repeatable); a NAME not in
    /// the config is added with every capability.
    #[arg(long = "policy", value_name = "NAME=FILE.wasm", value_parser = sluice::record::replay::parse_override)]
    policies: Vec<(String, PathBuf)>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 when any session changed.
    #[arg(long)]
    fail_on_diff: bool,
    /// Write each replayed session into DIR as a test case (the replay's
    /// outcome becomes the expectation).
    #[arg(long, value_name = "DIR")]
    accept: Option<PathBuf>,
    /// A host call the recording does not have: fail the session, answer
    /// "not found", or make it live (DNS through [dns]: the network).
    #[arg(long, value_enum, default_value = "fail")]
    unrecorded: sluice::record::replay::Unrecorded,
    /// Compiled-code cache (default: the config's).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Recording files (.jsonl), or folders of them.
    #[arg(required = true)]
    recordings: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// The gateway config (default: DIR/sluice-test.toml; relative policy
    /// paths are relative to it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Replace the component of policy NAME (repeatable).
    #[arg(long = "policy", value_name = "NAME=FILE.wasm", value_parser = sluice::record::replay::parse_override)]
    policies: Vec<(String, PathBuf)>,
    /// A host call a case does not answer: "not-found" (default), fail,
    /// or live.
    #[arg(long, value_enum, default_value = "not-found")]
    unrecorded: sluice::record::replay::Unrecorded,
    /// Compiled-code cache (default: sluice-policy-cache in the temporary
    /// folder).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The folder of cases.
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Compile policy components into the compiled-code cache and check
    /// them against this gateway's contract. A gateway with the same
    /// [policy_engine] settings then loads them without compiling.
    Compile {
        /// The gateway's configuration file (for [policy_engine] and
        /// data_dir).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Component files (.wasm).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make a new policy, ready to build and test, from a template.
    New {
        /// The language.
        #[arg(long, value_enum)]
        lang: sluice::scaffold::Lang,
        /// The policy's name (a-z, 0-9, dashes).
        name: String,
        /// The folder to make (default ./NAME); must not exist or be empty.
        dir: Option<PathBuf>,
    },
    /// Build the policy in a folder (Rust, Python, JavaScript or C) into a
    /// component.
    Build {
        /// The policy's folder.
        dir: PathBuf,
        /// The component to write (default DIR/target/NAME.wasm).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Reload the policies of a running gateway now: its config file's
    /// chain is loaded (changed policies compiled, instantiated, init'ed)
    /// and swapped in for new sessions; on any failure the running
    /// policies stay and the reason is printed.
    Reload {
        /// The gateway's configuration file (for its data folder).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The policies in force in a running gateway: version, load time,
    /// calls, verdicts, errors, timeouts, mean call time.
    Status {
        /// The gateway's configuration file (for its data folder).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn admin_request(
    config: Option<&PathBuf>,
    req: &sluice::admin::Request,
) -> anyhow::Result<serde_json::Value> {
    let cfg = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    sluice::admin::request(&cfg.data_dir, req).with_context(|| {
        format!(
            "is sluice running with data_dir {}?",
            cfg.data_dir.display()
        )
    })
}

fn print_policy_stats(p: &serde_json::Value, indent: &str) {
    let v = &p["verdicts"];
    println!(
        "{indent}{} {} (sha256 {:.12}…, loaded {})",
        p["name"].as_str().unwrap_or("?"),
        p["version"].as_str().unwrap_or("?"),
        p["wasm_hash"].as_str().unwrap_or("?"),
        p["loaded_at"].as_str().unwrap_or("?")
    );
    println!(
        "{indent}  calls {}  continue {}  accept {}  reject {}  tempfail {}  discard {}  quarantine {}  route {}",
        p["calls"],
        v["continue"],
        v["accept"],
        v["reject"],
        v["tempfail"],
        v["discard"],
        v["quarantine"],
        v["route"]
    );
    println!(
        "{indent}  errors {}  timeouts {}  traps {}  memory_limits {}  mean call {:.1} µs",
        p["errors"],
        p["timeouts"],
        p["traps"],
        p["memory_limits"],
        p["mean_call_us"].as_f64().unwrap_or(0.0)
    );
}

fn policy_command(action: PolicyAction) -> anyhow::Result<()> {
    match action {
        PolicyAction::New { lang, name, dir } => {
            let dir = sluice::scaffold::new_policy(lang, &name, dir.as_deref())?;
            println!("made {lang} policy {name} in {}", dir.display());
            Ok(())
        }
        PolicyAction::Build { dir, out } => {
            let started = std::time::Instant::now();
            let wasm = sluice::scaffold::build(&dir, out.as_deref())?;
            println!("built {} in {:.1?}", wasm.display(), started.elapsed());
            Ok(())
        }
        PolicyAction::Compile { config, files } => {
            let cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::embedded(),
            };
            // Compiling here serves no one: use every core.
            let mut engine_cfg = cfg.policy_engine.clone();
            engine_cfg.parallel_compilation = true;
            sluice::private::ensure(&engine_cfg.cache_dir)?;
            let engine = sluice::policy::Engine::new(&engine_cfg)?;
            for file in &files {
                let started = std::time::Instant::now();
                let done = engine
                    .precompile(file)
                    .with_context(|| format!("compiling {}", file.display()))?;
                println!(
                    "{}: {} (sha256 {}) in {}, {:.1?}",
                    file.display(),
                    if done.was_cached {
                        "already compiled"
                    } else {
                        "compiled"
                    },
                    done.wasm_hash,
                    done.cache_dir.display(),
                    started.elapsed()
                );
            }
            Ok(())
        }
        PolicyAction::Reload { config, json } => {
            let answer = admin_request(config.as_ref(), &sluice::admin::Request::PolicyReload);
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    // The gateway's refusal: say it as it is.
                    return Err(anyhow::anyhow!("reload refused: {}", e.root_cause()));
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            println!(
                "{} in {:.0} ms",
                if answer["swapped"] == serde_json::json!(true) {
                    "reloaded: new sessions use the new policies"
                } else {
                    "nothing changed"
                },
                answer["took_ms"].as_f64().unwrap_or(0.0)
            );
            for p in answer["policies"].as_array().into_iter().flatten() {
                println!(
                    "  {} {} (sha256 {:.12}…){}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
                    p["wasm_hash"].as_str().unwrap_or("?"),
                    if p["loaded"] == serde_json::json!(true) {
                        " loaded"
                    } else {
                        " unchanged"
                    }
                );
            }
            for s in answer["needs_restart"].as_array().into_iter().flatten() {
                println!("  [{}] changed: needs a restart", s.as_str().unwrap_or("?"));
            }
            Ok(())
        }
        PolicyAction::Status { config, json } => {
            let answer = admin_request(config.as_ref(), &sluice::admin::Request::PolicyStatus)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let policies = answer["policies"].as_array().cloned().unwrap_or_default();
            if policies.is_empty() {
                println!("no policies");
            }
            for p in &policies {
                print_policy_stats(p, "");
                if p["candidate"].is_object() {
                    let c = &p["candidate"];
                    println!(
                        "  candidate ({}{}), {} difference(s):",
                        c["mode"].as_str().unwrap_or("?"),
                        if c["mode"] == "canary" {
                            format!(" {}%", c["canary_percent"])
                        } else {
                            String::new()
                        },
                        c["differences"]
                    );
                    print_policy_stats(c, "    ");
                }
            }
            println!(
                "reloads: {} ({} refused)",
                answer["reloads"], answer["reload_failures"]
            );
            if let Some(l) = answer["last_reload"].as_object() {
                println!(
                    "last reload: {} by {}: {}",
                    l["at"].as_str().unwrap_or("?"),
                    l["trigger"].as_str().unwrap_or("?"),
                    l["result"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
enum QueueAction {
    /// List queued messages and their recipients.
    List,
    /// Show one message: envelope, delivery state and headers.
    Show {
        /// Queue id.
        id: String,
    },
    /// Retry deferred recipients now.
    Retry {
        /// Queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every message.
        #[arg(long)]
        all: bool,
    },
    /// Delete a message: no delivery, no DSN.
    Delete {
        /// Queue id.
        id: String,
    },
    /// Hold a message: no delivery until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message.
    Release {
        /// Queue id.
        id: String,
    },
}

fn queue_command(config: Option<PathBuf>, json: bool, action: QueueAction) -> anyhow::Result<()> {
    use sluice::admin::{Request, request};
    let cfg = match &config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    let (req, what) = match action {
        QueueAction::List => (Request::List, "list"),
        QueueAction::Show { id } => (Request::Show { id }, "show"),
        QueueAction::Retry { id, .. } => (Request::Retry { id }, "retry"),
        QueueAction::Delete { id } => (Request::Delete { id }, "delete"),
        QueueAction::Hold { id } => (Request::Hold { id }, "hold"),
        QueueAction::Release { id } => (Request::Release { id }, "release"),
    };
    let answer = request(&cfg.data_dir, &req).with_context(|| {
        format!(
            "is sluice running with data_dir {}?",
            cfg.data_dir.display()
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match what {
        "list" => print_list(&answer),
        "show" => print_show(&answer),
        "retry" => println!("{} message(s) scheduled now", answer["count"]),
        other => println!("{other}: ok"),
    }
    Ok(())
}

fn print_recipients(env: &serde_json::Value) {
    for r in env["recipients"].as_array().into_iter().flatten() {
        let mut line = format!(
            "    {:<40} {:<9}",
            r["address"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?")
        );
        if let Some(n) = r["attempts"].as_u64().filter(|n| *n > 0) {
            line.push_str(&format!(" attempts={n}"));
        }
        if let Some(t) = r["next_attempt"].as_str() {
            line.push_str(&format!(" next={t}"));
        }
        if let Some(d) = r["diagnostic"].as_str() {
            line.push_str(&format!(" ({d})"));
        }
        println!("{line}");
    }
}

fn print_list(answer: &serde_json::Value) {
    let msgs = answer["messages"].as_array().cloned().unwrap_or_default();
    let corrupt = answer["corrupt"].as_array().cloned().unwrap_or_default();
    if !corrupt.is_empty() {
        println!(
            "{} damaged entr{} set aside in spool/corrupt/ (not delivered):",
            corrupt.len(),
            if corrupt.len() == 1 { "y" } else { "ies" }
        );
        for c in &corrupt {
            println!(
                "  {} {}",
                c["id"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("")
            );
        }
    }
    if msgs.is_empty() {
        println!("queue is empty");
        return;
    }
    for m in &msgs {
        let sender = m["sender"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<>");
        println!(
            "{}{} {:>9} {} {}",
            m["id"].as_str().unwrap_or("?"),
            if m["held"] == serde_json::json!(true) {
                "!"
            } else {
                " "
            },
            m["size"],
            m["received_at"].as_str().unwrap_or("?"),
            sender
        );
        print_recipients(m);
    }
    println!("{} message(s); ! = held", msgs.len());
}

fn print_show(answer: &serde_json::Value) {
    let env = &answer["envelope"];
    println!("id:        {}", env["id"].as_str().unwrap_or("?"));
    println!("arrived:   {}", env["received_at"].as_str().unwrap_or("?"));
    println!(
        "sender:    {}",
        env["sender"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<>")
    );
    println!(
        "client:    {} ({})",
        env["client"]["ip"].as_str().unwrap_or("?"),
        env["client"]["helo"].as_str().unwrap_or("?")
    );
    println!("size:      {}", env["size"]);
    println!("held:      {}", env["held"]);
    println!("recipients:");
    print_recipients(env);
    println!();
    print!("{}", answer["headers"].as_str().unwrap_or(""));
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
        let server = sluice::gateway::Gateway::start(cfg, config).await?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Install the handlers before serving, so a signal that comes at
        // once still means "shut down cleanly", never the default action.
        let mut signals = Signals::install().context("installing signal handlers")?;
        let reloader = server.reloader();
        tokio::spawn(async move {
            loop {
                let signal = signals.wait().await;
                if signal == "SIGHUP" {
                    let reloader = reloader.clone();
                    // The outcome is logged by the reloader.
                    tokio::spawn(async move { reloader.reload("SIGHUP").await });
                    continue;
                }
                tracing::info!(
                    signal,
                    "shutting down: no new connections, finishing messages in flight"
                );
                let _ = tx.send(true);
                break;
            }
        });
        server.run(rx).await;
        tracing::info!("stopped");
        Ok(())
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// The exit code of a command that has its own.
fn exit(r: anyhow::Result<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    // Everything the gateway writes (mail, the spool, recordings, the
    // admin socket, compiled policies, the users file) is for its own
    // user only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|_| println!("{}: ok", file.display()))
            .map_err(Into::into),
        Command::Queue {
            config,
            json,
            action,
        } => queue_command(config, json, action),
        Command::Policy { action } => policy_command(action),
        Command::Replay(a) => {
            return exit(sluice::record::suite::replay_main(
                sluice::record::suite::ReplayOptions {
                    config: a.config,
                    policies: a.policies,
                    inputs: a.recordings,
                    json: a.json,
                    fail_on_diff: a.fail_on_diff,
                    accept: a.accept,
                    unrecorded: a.unrecorded,
                    cache_dir: a.cache_dir,
                },
            ));
        }
        Command::Test(a) => {
            return exit(sluice::record::suite::test_main(
                sluice::record::suite::TestOptions {
                    dir: a.dir,
                    config: a.config,
                    policies: a.policies,
                    unrecorded: a.unrecorded,
                    cache_dir: a.cache_dir,
                },
            ));
        }
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
