//! Shared machinery: a sandbox (temporary config and data folder), the
//! server process with port discovery from its JSON log, spool readers, a
//! raw SMTP client over `TcpStream`, and runners for the external clients
//! (swaks and the Python scripts in `tests/clients/`).
//!
//! Every wait here is bounded by a deadline, and every server started is
//! killed (by PID) and reaped when its [`Server`] is dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default deadline for one SMTP reply.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an external client (swaks, python) may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) use sluice_test_kit::{Server, sluice_bin};

/// The repository root (the workspace).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A file of the shared message corpus, checked to exist.
pub(crate) fn corpus_file(rel: &str) -> PathBuf {
    let path = repo_root().join("../shared/corpus").join(rel);
    assert!(
        path.is_file(),
        "corpus message {} is missing (expected the shared corpus beside the repository)",
        path.display()
    );
    path
}

/// A script in `tests/clients/`.
pub(crate) fn client_script(name: &str) -> PathBuf {
    let path = repo_root().join("tests/clients").join(name);
    assert!(
        path.is_file(),
        "client script {} is missing",
        path.display()
    );
    path
}

// ---------------------------------------------------------------------------
// Configuration

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub(crate) enum Listener {
    /// Plain SMTP with STARTTLS.
    Plain,
    /// TLS from the first octet.
    ImplicitTls,
    /// Expects a PROXY header from these networks.
    Proxy {
        /// `trusted_proxies`.
        trusted: Vec<String>,
    },
}

/// What the test wants in the server's TOML file.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// `hostname`.
    pub(crate) hostname: String,
    /// `local_domains`.
    pub(crate) local_domains: Vec<String>,
    /// `relay_networks`.
    pub(crate) relay_networks: Vec<String>,
    /// The listeners, in order; [`Server::addr`] indexes them.
    pub(crate) listeners: Vec<Listener>,
    /// Extra `[limits]` entries as (key, TOML value).
    pub(crate) limits: Vec<(String, String)>,
    /// `spool.group_commit`.
    pub(crate) group_commit: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "mx.test.example".into(),
            local_domains: vec!["example.com".into()],
            relay_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            listeners: vec![Listener::Plain, Listener::ImplicitTls],
            limits: Vec::new(),
            group_commit: true,
        }
    }
}

impl ServerConfig {
    /// Add or replace one `[limits]` entry (`value` is TOML).
    pub(crate) fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.retain(|(k, _)| k != key);
        self.limits.push((key.into(), value.into()));
        self
    }

    /// The TOML text for a data folder.
    pub(crate) fn to_toml(&self, data_dir: &Path) -> String {
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut t = String::new();
        writeln!(t, "data_dir = {:?}", data_dir.display().to_string()).unwrap();
        writeln!(t, "hostname = {:?}", self.hostname).unwrap();
        writeln!(t, "local_domains = {}", list(&self.local_domains)).unwrap();
        writeln!(t, "relay_networks = {}", list(&self.relay_networks)).unwrap();
        for l in &self.listeners {
            t.push_str("\n[[listener]]\naddress = \"127.0.0.1:0\"\n");
            match l {
                Listener::Plain => {}
                Listener::ImplicitTls => t.push_str("implicit_tls = true\n"),
                Listener::Proxy { trusted } => {
                    writeln!(
                        t,
                        "proxy_protocol = true\ntrusted_proxies = {}",
                        list(trusted)
                    )
                    .unwrap();
                }
            }
        }
        t.push_str("\n[limits]\n");
        for (k, v) in &self.limits {
            writeln!(t, "{k} = {v}").unwrap();
        }
        writeln!(t, "\n[spool]\ngroup_commit = {}", self.group_commit).unwrap();
        // These tests look at what was accepted into the spool: keep the
        // queue from delivering (and so removing) it.
        writeln!(t, "\n[queue]\ndeliver = false").unwrap();
        t
    }
}

// ---------------------------------------------------------------------------
// Sandbox and server process

/// A temporary folder holding one test's config file and data folder: the
/// kit's [`sluice_test_kit::Sandbox`] (its files, `start_toml`, `restart`)
/// plus starting from a [`ServerConfig`] and a view of the spool.
#[derive(Debug, Default)]
pub(crate) struct Sandbox(sluice_test_kit::Sandbox);

impl std::ops::Deref for Sandbox {
    type Target = sluice_test_kit::Sandbox;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Sandbox {
    /// A fresh, empty sandbox.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Write `cfg` and start a server on it; panics (with the server's log)
    /// when it does not come up.
    pub(crate) fn start(&self, cfg: &ServerConfig) -> Server {
        self.start_toml(&cfg.to_toml(&self.data_dir()), cfg.listeners.len())
    }

    /// The spool of this sandbox's data folder.
    pub(crate) fn spool(&self) -> SpoolView {
        SpoolView {
            root: self.data_dir().join("spool"),
        }
    }
}

// ---------------------------------------------------------------------------
// Spool

/// Read access to `DATA_DIR/spool`.
#[derive(Debug, Clone)]
pub(crate) struct SpoolView {
    root: PathBuf,
}

impl SpoolView {
    /// The spool folder `root` (a data folder outside a sandbox's own).
    pub(crate) fn at(root: PathBuf) -> Self {
        Self { root }
    }
}

/// One committed message (its envelope file exists).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The queue id.
    pub(crate) id: String,
    /// `ID.json`.
    pub(crate) envelope: Value,
    /// `ID.eml`, with our `Received:` header.
    pub(crate) eml: Vec<u8>,
}

impl Stored {
    /// The message as the client sent it: `eml` without `trace_len` octets.
    pub(crate) fn body(&self) -> &[u8] {
        let n = self.trace_len();
        assert!(
            n <= self.eml.len(),
            "trace_len {n} beyond the file ({})",
            self.eml.len()
        );
        &self.eml[n..]
    }

    /// The trace header length from the envelope.
    pub(crate) fn trace_len(&self) -> usize {
        let n = self.envelope["trace_len"]
            .as_u64()
            .expect("envelope trace_len");
        usize::try_from(n).expect("trace_len fits")
    }

    /// The prepended trace header.
    pub(crate) fn trace(&self) -> &[u8] {
        &self.eml[..self.trace_len()]
    }

    /// Envelope recipients.
    pub(crate) fn recipients(&self) -> Vec<String> {
        self.envelope["recipients"]
            .as_array()
            .expect("envelope recipients")
            .iter()
            .map(|r| {
                r["address"]
                    .as_str()
                    .expect("recipient address")
                    .to_string()
            })
            .collect()
    }

    /// Check the structural invariants every stored message has.
    pub(crate) fn check_consistent(&self) {
        let env = &self.envelope;
        assert_eq!(env["version"], 1, "envelope version: {env}");
        assert_eq!(
            env["id"],
            self.id.as_str(),
            "envelope id matches file name: {env}"
        );
        assert_eq!(
            env["size"].as_u64(),
            Some(self.eml.len() as u64),
            "envelope size is the .eml length: {env}"
        );
        let trace = self.trace();
        assert!(
            trace.starts_with(b"Received: "),
            "the .eml starts with our Received: header, got {:?}",
            String::from_utf8_lossy(&trace[..trace.len().min(60)])
        );
        assert!(trace.ends_with(b"\r\n"), "the trace header ends with CRLF");
    }
}

impl SpoolView {
    /// `spool/queue`.
    pub(crate) fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// `spool/tmp`.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// File names in `spool/tmp` (empty when it does not exist).
    pub(crate) fn tmp_files(&self) -> Vec<String> {
        list_names(&self.tmp_dir())
    }

    /// File names in `spool/queue`.
    pub(crate) fn queue_files(&self) -> Vec<String> {
        list_names(&self.queue_dir())
    }

    /// Ids of committed messages (those with an `ID.json`).
    pub(crate) fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .queue_files()
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// Read one message.
    pub(crate) fn read(&self, id: &str) -> Stored {
        let q = self.queue_dir();
        let json = std::fs::read(q.join(format!("{id}.json")))
            .unwrap_or_else(|e| panic!("read {id}.json: {e}"));
        let envelope: Value =
            serde_json::from_slice(&json).unwrap_or_else(|e| panic!("parse {id}.json: {e}"));
        let eml = std::fs::read(q.join(format!("{id}.eml")))
            .unwrap_or_else(|e| panic!("read {id}.eml: {e}"));
        Stored {
            id: id.to_string(),
            envelope,
            eml,
        }
    }

    /// All committed messages, sorted by id.
    pub(crate) fn messages(&self) -> Vec<Stored> {
        self.ids().iter().map(|id| self.read(id)).collect()
    }

    /// The single committed message; panics unless there is exactly one.
    pub(crate) fn only_message(&self) -> Stored {
        let ids = self.ids();
        assert_eq!(
            ids.len(),
            1,
            "expected exactly one message in the queue, found {ids:?}"
        );
        self.read(&ids[0])
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Raw SMTP client

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub(crate) code: u16,
    /// Each line as received, without CRLF (`250-SIZE 123`).
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// The last line, e.g. `250 2.0.0 Ok: queued as ID`.
    pub(crate) fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// True if the last line starts with `prefix` (e.g. `"550 5.6.11"`).
    pub(crate) fn is(&self, prefix: &str) -> bool {
        self.last().starts_with(prefix)
    }

    /// The queue id from `250 2.0.0 Ok: queued as ID`.
    pub(crate) fn queue_id(&self) -> Option<String> {
        if self.code != 250 {
            return None;
        }
        let (_, id) = self.last().split_once("queued as ")?;
        Some(id.trim().to_string())
    }

    /// The EHLO keywords (upper case, first word of each line after the first).
    pub(crate) fn keywords(&self) -> Vec<String> {
        self.lines
            .iter()
            .skip(1)
            .filter_map(|l| l.get(4..))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect()
    }
}

/// A raw SMTP client with bounded reads.
#[derive(Debug)]
pub(crate) struct SmtpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl SmtpConn {
    /// Connect (without reading the greeting).
    pub(crate) fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Connect and expect a `220` greeting.
    pub(crate) fn open(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let greeting = c.reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        c
    }

    /// Connect, read the greeting and EHLO.
    pub(crate) fn ehlo(addr: SocketAddr, name: &str) -> Self {
        let mut c = Self::open(addr);
        c.expect(&format!("EHLO {name}"), 250);
        c
    }

    /// Our local address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Write octets in one call.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Write octets; panic on error.
    pub(crate) fn write(&mut self, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        self.send(bytes)
            .unwrap_or_else(|e| panic!("write of {} octets failed: {e}", bytes.len()));
    }

    /// Read one reply within `timeout`.
    pub(crate) fn read_reply(&mut self, timeout: Duration) -> std::io::Result<Reply> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            let bad = || {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("malformed reply line {line:?}"),
                )
            };
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    fn read_line(&mut self, deadline: Instant) -> std::io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no reply line in time; pending {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "connection closed; pending {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read one reply; panic on error or timeout.
    pub(crate) fn reply(&mut self) -> Reply {
        self.read_reply(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Send a command line (CRLF added) and read its reply.
    pub(crate) fn cmd(&mut self, line: &str) -> Reply {
        self.write(format!("{line}\r\n"));
        self.reply()
    }

    /// Send a command and assert the reply code.
    pub(crate) fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "reply to {line:?}: {r:?}");
        r
    }

    /// Wait up to `timeout` for the peer to close; true if it did (EOF or reset).
    pub(crate) fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return true;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Octets received but not yet parsed into replies.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Close both directions now.
    pub(crate) fn abort(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// A full transaction (MAIL, RCPT each, DATA, body, dot); returns the
    /// final reply. `body` is sent dot-stuffed and must end with CRLF.
    pub(crate) fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.expect("DATA", 354);
        let mut wire = dot_stuff(body);
        wire.extend_from_slice(b".\r\n");
        self.write(&wire);
        self.reply()
    }
}

/// Dot-stuff a CRLF-terminated message for DATA (RFC 5321 §4.5.2).
pub(crate) fn dot_stuff(body: &[u8]) -> Vec<u8> {
    assert!(
        body.is_empty() || body.ends_with(b"\r\n"),
        "body must end with CRLF"
    );
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// Convert LF line ends to CRLF (leaving existing CRLF alone).
pub(crate) fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// Assert two messages are equal, printing a readable diff position.
pub(crate) fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let window = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: stored {} octets, expected {}; first difference at octet {at}:\n  stored:   {:?}\n  expected: {:?}",
        got.len(),
        want.len(),
        window(got),
        window(want)
    );
}

// ---------------------------------------------------------------------------
// External clients

/// Run a command with a time limit, killing it (by PID) when it overruns.
pub(crate) fn run_bounded(cmd: &mut Command, input: Option<&[u8]>) -> Output {
    let program = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write child stdin");
    }
    wait_child(&mut child, CLIENT_TIMEOUT)
}

/// Collect a spawned child's output (its stdout and stderr piped), killing
/// it (by PID) when it has not finished within `timeout`.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Output {
    // Drain both pipes in threads so the child never blocks on them.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for client") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {} did not finish within {timeout:?}", child.id());
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    Output {
        status,
        stdout: out.join().expect("stdout drain"),
        stderr: err.join().expect("stderr drain"),
    }
}

/// The swaks program; fails the test when it is not installed.
pub(crate) fn swaks() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("swaks"))
        .find(|p| p.is_file())
        .expect(
            "swaks is not on PATH: these end-to-end tests need it (Debian: apt-get install swaks)",
        )
}

/// Run swaks against `addr` with extra arguments; returns its output.
pub(crate) fn run_swaks(addr: SocketAddr, args: &[&str]) -> Output {
    let mut cmd = Command::new(swaks());
    cmd.arg("--server")
        .arg(addr.ip().to_string())
        .arg("--port")
        .arg(addr.port().to_string())
        .arg("--timeout")
        .arg("15")
        .args(args);
    run_bounded(&mut cmd, None)
}

/// The last `queued as ID` in a client transcript.
pub(crate) fn queued_id_in(transcript: &str) -> Option<String> {
    transcript
        .lines()
        .filter_map(|l| {
            l.split_once("queued as ")
                .map(|(_, id)| id.trim().to_string())
        })
        .next_back()
}

/// Run `tests/clients/send.py` (smtplib) and return its JSON report.
pub(crate) fn run_smtplib(addr: SocketAddr, args: &[&str]) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(client_script("send.py"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(args);
    let out = run_bounded(&mut cmd, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send.py failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("send.py output {stdout:?}: {e}"))
}

/// One step of a `tls_session.py` dialog.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Write this text in one write.
    Send(String),
    /// Read one reply.
    Reply,
    /// Start TLS.
    Tls,
    /// Read for this many milliseconds and record what arrives.
    Idle(u64),
}

/// What `tls_session.py` saw.
#[derive(Debug, Clone)]
pub(crate) struct TlsTranscript {
    /// The replies read, in order.
    pub(crate) replies: Vec<Reply>,
    /// Text received during `Idle` steps.
    pub(crate) idle: Vec<String>,
    /// TLS version and cipher when TLS was started.
    pub(crate) tls: Option<BTreeMap<String, String>>,
    /// The error that ended the dialog early, if any.
    pub(crate) error: Option<String>,
}

/// Run a scripted dialog with `tests/clients/tls_session.py`.
pub(crate) fn run_tls_session(addr: SocketAddr, implicit: bool, steps: &[Step]) -> TlsTranscript {
    let json: Vec<Value> = steps
        .iter()
        .map(|s| match s {
            Step::Send(t) => serde_json::json!(["send", t]),
            Step::Reply => serde_json::json!(["reply"]),
            Step::Tls => serde_json::json!(["tls"]),
            Step::Idle(ms) => serde_json::json!(["idle", ms]),
        })
        .collect();
    let mut cmd = Command::new("python3");
    cmd.arg(client_script("tls_session.py"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    if implicit {
        cmd.arg("--implicit");
    }
    let input = serde_json::to_vec(&json).expect("encode steps");
    let out = run_bounded(&mut cmd, Some(&input));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tls_session.py failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("tls_session.py output {stdout:?}: {e}"));
    let mut replies = Vec::new();
    let mut idle = Vec::new();
    for ev in v["events"].as_array().expect("events") {
        match ev[0].as_str() {
            Some("reply") => replies.push(Reply {
                code: u16::try_from(ev[1].as_u64().expect("code")).expect("code fits"),
                lines: ev[2]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .map(|l| l.as_str().expect("line").to_string())
                    .collect(),
            }),
            Some("idle") => idle.push(ev[1].as_str().unwrap_or_default().to_string()),
            other => panic!("unknown event {other:?}"),
        }
    }
    let tls = v["tls"].as_object().map(|o| {
        o.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    });
    TlsTranscript {
        replies,
        idle,
        tls,
        error: v["error"].as_str().map(str::to_string),
    }
}

/// A small deterministic pseudo-random generator (xorshift64*).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded; a zero seed is replaced.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
}

/// A CRLF text body of about `size` octets with a marker header; no line
/// starts with a dot.
pub(crate) fn random_message(rng: &mut Rng, marker: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <load@example.org>\r\nTo: <sink@example.com>\r\nSubject: load {marker}\r\nX-Test-Id: {marker}\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        let width = rng.range(1, 78);
        for _ in 0..width {
            let c = b"abcdefghijklmnopqrstuvwxyz0123456789 ,;:!?-"[rng.range(0, 43)];
            m.push(c);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Assert the envelope fields every plain loopback transaction has.
pub(crate) fn assert_envelope(msg: &Stored, sender: &str, recipients: &[&str], helo: &str) {
    msg.check_consistent();
    let env = &msg.envelope;
    assert_eq!(env["sender"], sender, "envelope sender: {env}");
    assert_eq!(msg.recipients(), recipients, "envelope recipients: {env}");
    assert_eq!(env["client"]["helo"], helo, "envelope client.helo: {env}");
    assert_eq!(
        env["client"]["ip"], "127.0.0.1",
        "envelope client.ip: {env}"
    );
    assert!(
        env["client"]["port"].as_u64().is_some_and(|p| p > 0),
        "envelope client.port: {env}"
    );
    assert!(
        env["received_at"].as_str().is_some_and(|s| !s.is_empty()),
        "envelope received_at: {env}"
    );
}

/// Wait (bounded) for the "transaction" log line of `queue_id` and check it.
pub(crate) fn assert_transaction_logged(server: &Server, queue_id: &str, sender: &str) {
    let rec = server
        .wait_log("transaction", Duration::from_secs(5), |v| {
            v["fields"]["queue_id"] == queue_id
        })
        .unwrap_or_else(|| {
            panic!(
                "no transaction log line for {queue_id}; log:\n{}",
                server.log_text()
            )
        });
    let f = &rec["fields"];
    assert!(
        f["sender"].to_string().contains(sender),
        "transaction log sender: {rec}"
    );
    let result = f["result"].as_str().unwrap_or_default();
    assert!(
        result.starts_with("250 2.0.0") && result.contains(queue_id),
        "transaction log result: {rec}"
    );
}
