//! Helpers for the tests of the policies written in Python and JavaScript
//! (`policies/python/`, `policies/js/`) and of
//! `sluice policy new`: build a policy with the real `sluice policy build`,
//! start the real gateway with a policy loaded, speak SMTP to it, and read
//! what it delivered.
//!
//! Servers listen on 127.0.0.1 only and are killed (by PID) when their
//! guard drops; every wait has a deadline. A missing toolchain is a test
//! failure naming what to install (`scripts/test` installs everything).

#![warn(missing_docs)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub use sluice_policy_build::{POLICIES, WORKSPACE};

/// How long a server may take to listen (a policy not in the compiled
/// cache yet is compiled at start).
pub const STARTUP: Duration = Duration::from_secs(300);
/// How long one SMTP reply may take.
pub const REPLY: Duration = Duration::from_secs(30);
/// How long a delivery may take to show up.
pub const DELIVERY: Duration = Duration::from_secs(20);

/// The workspace's folder.
#[must_use]
pub fn workspace() -> &'static Path {
    Path::new(WORKSPACE)
}

/// `target/debug/sluice` (tests run from `target/debug/deps/`).
#[must_use]
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the gateway binary {} is missing: `cargo test --workspace` builds it (or `cargo build -p sluice`)",
        bin.display()
    );
    bin
}

/// Where this crate's tests keep what they build: `target/lang-policies`.
#[must_use]
pub fn out_dir() -> PathBuf {
    let dir = Path::new(sluice_policy_build::POLICY_TARGET_DIR)
        .parent()
        .map_or_else(|| workspace().join("target"), Path::to_path_buf)
        .join("lang-policies");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The compiled-code cache every gateway of these tests shares.
#[must_use]
pub fn engine_cache() -> PathBuf {
    out_dir().join("engine-cache")
}

/// The `[policy_engine]` section of every config here (the same settings
/// for `sluice policy compile` and `sluice serve`, so the cache is hit).
#[must_use]
pub fn engine_section() -> String {
    format!(
        "[policy_engine]\ncache_dir = {:?}\nmax_instances = 32\nmax_memory = \"128MiB\"\n",
        engine_cache().display().to_string()
    )
}

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> SystemTime {
    let mut best = SystemTime::UNIX_EPOCH;
    let Ok(meta) = std::fs::metadata(path) else {
        return best;
    };
    if meta.is_dir() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if matches!(
            name.as_deref(),
            Some("target" | "node_modules" | "__pycache__")
        ) {
            return best;
        }
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            best = best.max(newest(&entry.path()));
        }
    } else if let Ok(m) = meta.modified() {
        best = m;
    }
    best
}

/// The tool folders `scripts/test` fills, on `PATH` for the child.
fn with_tools(cmd: &mut Command) -> &mut Command {
    let root = workspace();
    let mut paths = vec![
        root.join(".tools/py/bin"),
        root.join(".tools/node/node_modules/.bin"),
    ];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    cmd.env(
        "PATH",
        std::env::join_paths(paths).unwrap_or_else(|e| panic!("PATH: {e}")),
    )
}

/// Build the policy in `dir` with `sluice policy build` into `out`, unless
/// `out` is newer than the policy, the SDKs and the contract. Serialised
/// across the tests of one binary.
pub fn build(dir: &Path, out: &Path) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let inputs = [
        newest(dir),
        newest(&workspace().join("guest")),
        newest(&workspace().join("wit")),
        newest(&sluice_bin()),
    ]
    .into_iter()
    .max()
    .unwrap_or(SystemTime::UNIX_EPOCH);
    if std::fs::metadata(out)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > inputs)
    {
        return;
    }
    let output = with_tools(&mut Command::new(sluice_bin()))
        .args(["policy", "build"])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("run sluice policy build: {e}"));
    assert!(
        output.status.success(),
        "sluice policy build {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The component of the policy `name` in `lang` ("rust", "python", "js"),
/// built if needed.
#[must_use]
pub fn component(lang: &str, name: &str) -> PathBuf {
    if lang == "rust" {
        let p = sluice_policy_build::policy(name)
            .unwrap_or_else(|| panic!("policies/{name} (Rust) was not built"));
        return PathBuf::from(p.wasm);
    }
    let dir = workspace().join("policies").join(lang).join(name);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let out = out_dir().join(lang).join(format!("{name}.wasm"));
    build(&dir, &out);
    out
}

/// The policy folders of a language in `policies/<lang>/`.
#[must_use]
pub fn policy_dirs(lang: &str) -> Vec<String> {
    let root = workspace().join("policies").join(lang);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("list {}: {e}", root.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "__pycache__" && n != "node_modules")
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// The gateway

/// A temporary folder with the config and the data folder of one server.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A new, empty sandbox.
    #[must_use]
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("sluice-lang-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir: {e}")),
        }
    }

    /// The data folder.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A config: a plain listener and a PROXY listener trusting loopback,
    /// delivery to Maildirs for example.com, then `rest` (`[[policy]]`).
    #[must_use]
    pub fn config(&self, rest: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "data_dir = {:?}", self.data_dir().display().to_string());
        t.push_str("hostname = \"mx.test.example\"\nlocal_domains = [\"example.com\"]\n");
        t.push_str(
            "relay_networks = [\"127.0.0.0/8\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
        );
        t.push_str("\n[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n");
        t.push_str("\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n\n");
        t.push_str(&engine_section());
        t.push('\n');
        t.push_str(rest);
        t
    }

    /// Write `config` and start a server; waits for its two listeners.
    #[must_use]
    pub fn start(&self, config: &str) -> Server {
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("write config: {e}"));
        Server::start(&path, 2)
    }

    /// The messages delivered to `local@domain`, sorted.
    #[must_use]
    pub fn maildir(&self, domain: &str, local: &str) -> Vec<String> {
        let dir = self
            .data_dir()
            .join("mail")
            .join(domain)
            .join(local)
            .join("new");
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        found.sort();
        found
    }

    /// Wait (bounded) until `count` messages are in `local@domain`'s Maildir.
    #[must_use]
    pub fn wait_maildir(&self, domain: &str, local: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let found = self.maildir(domain, local);
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The envelopes (`*.json`) in the spool's queue.
    #[must_use]
    pub fn spooled_envelopes(&self) -> Vec<Value> {
        let dir = self.data_dir().join("spool").join("queue");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }
}

/// A running `sluice serve`, killed and reaped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addrs: Vec<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(config: &Path, listeners: usize) -> Server {
        let mut child = Command::new(sluice_bin())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sluice serve: {e}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("piped stderr"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let (tx, rx) = mpsc::channel::<String>();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut logs) = sink.lock() {
                    logs.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            addrs: Vec::new(),
            logs,
            reader: Some(reader),
        };
        let deadline = Instant::now() + STARTUP;
        while server.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    if v["fields"]["message"] == "listening"
                        && let Some(addr) =
                            v["fields"]["address"].as_str().and_then(|a| a.parse().ok())
                    {
                        server.addrs.push(addr);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        thread::sleep(Duration::from_millis(100));
                        panic!(
                            "sluice exited during startup ({status}); log:\n{}",
                            server.log_text()
                        );
                    }
                    assert!(
                        !left.is_zero(),
                        "sluice did not listen within {STARTUP:?}; log:\n{}",
                        server.log_text()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "sluice closed its log during startup; log:\n{}",
                        server.log_text()
                    );
                }
            }
        }
        server
    }

    /// The address of listener `i` (0: plain, 1: PROXY protocol).
    #[must_use]
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// The log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The lines the policies logged (records of target `sluice::policy`
    /// with a `stage`), in order.
    #[must_use]
    pub fn policy_logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "sluice::policy" && v["fields"]["stage"].is_string())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

// ---------------------------------------------------------------------------
// SMTP

/// A raw SMTP client that records every reply.
#[derive(Debug)]
pub struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One reply: its code and its lines joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The code.
    pub code: u16,
    /// The text of its lines.
    pub text: String,
}

impl Smtp {
    /// Connect (sending a PROXY v1 header for `client` when given) and
    /// read the greeting.
    #[must_use]
    pub fn connect(addr: SocketAddr, client: Option<&str>) -> (Smtp, Reply) {
        let stream = TcpStream::connect_timeout(&addr, REPLY)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(REPLY))
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .set_write_timeout(Some(REPLY))
            .unwrap_or_else(|e| panic!("{e}"));
        let reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
        let mut smtp = Smtp { stream, reader };
        if let Some(ip) = client {
            let family = if ip.contains(':') { "TCP6" } else { "TCP4" };
            let dst = if ip.contains(':') { "::1" } else { "127.0.0.1" };
            smtp.send(&format!("PROXY {family} {ip} {dst} 5555 25"));
        }
        let greeting = smtp.reply();
        (smtp, greeting)
    }

    /// Send one line.
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    /// Read one reply; `None` when the server closed the connection.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end();
            let code = line.get(..3).and_then(|c| c.parse().ok())?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(Reply { code, text });
            }
        }
    }

    /// Read one reply, which must come.
    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .unwrap_or_else(|| panic!("connection closed while waiting for a reply"))
    }

    /// Whether the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }
}
