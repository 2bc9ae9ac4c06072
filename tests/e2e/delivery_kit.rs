//! Machinery for the delivery tests: the aiosmtpd sink (`tests/clients/
//! sink.py`) as a process, loopback ports shared by several sinks, a whole
//! gateway configuration with delivery on, Maildir readers, the `sluice
//! queue` command, the DSN parser (`tests/clients/dsn.py`) and log waits.
//!
//! Sinks for MX delivery all listen on one port (`[delivery] mx_port`), each
//! on its own loopback address (127.0.0.2 and up; 127.0.0.1 is left to the
//! gateways and the DNS servers). Every wait is bounded, and every process
//! started here is killed by PID and reaped when its guard is dropped.

// A shared helper: not every test uses every method.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::harness::{Reply, Sandbox, Server, SmtpConn, client_script, repo_root, run_bounded};

/// How long a sink may take to say "LISTENING".
const SINK_STARTUP: Duration = Duration::from_secs(20);
/// The loopback addresses sinks may use for a shared port.
const SINK_IPS: std::ops::RangeInclusive<u8> = 2..=12;
/// Attempts at finding (and starting sinks on) a shared port.
const PORT_ATTEMPTS: usize = 10;

/// The loopback address `127.0.0.n`.
pub(crate) fn lo(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Poll `f` every 25 ms until it returns `Some`, for at most `timeout`.
pub(crate) fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------
// Python

/// The Python interpreter with aiosmtpd: `$SLUICE_TEST_PYTHON` (set by
/// `scripts/test`), else the project's `.tools/py`. Fails the test with
/// what to do when neither works.
pub(crate) fn python() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("SLUICE_TEST_PYTHON").filter(|p| !p.is_empty()) {
                candidates.push(p.into());
            }
            candidates.push(repo_root().join(".tools/py/bin/python"));
            let mut tried = String::new();
            for candidate in candidates {
                let works = Command::new(&candidate)
                    .args(["-c", "import aiosmtpd"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if works {
                    return Ok(candidate);
                }
                write!(tried, " {}", candidate.display()).unwrap();
            }
            Err(format!(
                "no Python with aiosmtpd for the delivery tests (tried{tried}): \
                 run scripts/test, which installs it into .tools/py and sets SLUICE_TEST_PYTHON"
            ))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// Ports

/// Ports handed out in this process, never handed out again.
fn reserved() -> &'static Mutex<BTreeSet<u16>> {
    static RESERVED: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(Mutex::default)
}

/// A TCP port free on every sink address (127.0.0.2–127.0.0.12) right now
/// and not handed out before in this process.
pub(crate) fn shared_port() -> u16 {
    for _ in 0..100 {
        let probe = TcpListener::bind((lo(2), 0)).expect("bind a probe socket on 127.0.0.2");
        let port = probe.local_addr().expect("probe address").port();
        let held: Vec<TcpListener> = SINK_IPS
            .skip(1)
            .filter_map(|n| TcpListener::bind((lo(n), port)).ok())
            .collect();
        if held.len() + 1 != SINK_IPS.count() {
            continue;
        }
        if reserved().lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no port free on all of 127.0.0.2-127.0.0.12 after 100 tries");
}

/// A TCP port free on 127.0.0.1 right now (for a gateway listener that
/// must be known before start).
pub(crate) fn free_port_on_localhost() -> u16 {
    for _ in 0..100 {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe socket");
        let port = probe.local_addr().expect("probe address").port();
        if reserved().lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 after 100 tries");
}

// ---------------------------------------------------------------------------
// The sink

/// How to start one `sink.py`.
#[derive(Debug, Clone)]
pub(crate) struct SinkOptions {
    ip: Ipv4Addr,
    port: u16,
    lmtp: bool,
    no_smtputf8: bool,
    delay: Option<f64>,
}

impl SinkOptions {
    /// An SMTP sink on `ip`, port chosen by the sink.
    pub(crate) fn on(ip: Ipv4Addr) -> Self {
        Self {
            ip,
            port: 0,
            lmtp: false,
            no_smtputf8: false,
            delay: None,
        }
    }

    /// Speak LMTP instead of SMTP.
    pub(crate) fn lmtp(mut self) -> Self {
        self.lmtp = true;
        self
    }

    /// Do not offer SMTPUTF8.
    pub(crate) fn no_smtputf8(mut self) -> Self {
        self.no_smtputf8 = true;
        self
    }

    /// Wait this many seconds before answering the final dot.
    pub(crate) fn delay(mut self, seconds: f64) -> Self {
        self.delay = Some(seconds);
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

/// One message the sink stored.
#[derive(Debug, Clone)]
pub(crate) struct SinkMessage {
    /// `NNNN`, the sink's number for it.
    pub(crate) name: String,
    /// The message as received (after dot-unstuffing).
    pub(crate) eml: Vec<u8>,
    /// The envelope as the sink saw it (`mail_from`, `rcpt_tos`, ...).
    pub(crate) meta: Value,
}

impl SinkMessage {
    /// The envelope sender (`""` for `<>`, which aiosmtpd keeps as `"<>"`).
    pub(crate) fn mail_from(&self) -> &str {
        match self.meta["mail_from"].as_str() {
            Some("<>") => "",
            Some(s) => s,
            None => "?",
        }
    }

    /// The envelope recipients accepted.
    pub(crate) fn rcpt_tos(&self) -> Vec<String> {
        self.meta["rcpt_tos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The message as text (lossy), for assertions and failure messages.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.eml).into_owned()
    }

    /// The value of the first header field `name` (case-insensitive),
    /// unfolded.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        header_value(&self.eml, name)
    }
}

/// A running `sink.py`, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Sink {
    child: Child,
    addr: SocketAddr,
    out: TempDir,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Sink {
    /// Start a sink; panics (with its output) when it does not come up.
    pub(crate) fn start(opts: SinkOptions) -> Sink {
        Self::spawn(&opts)
            .and_then(Starting::wait)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start one sink per options, all on the same port, in parallel;
    /// retried on a new port when one cannot bind. Returns the port and the
    /// sinks, in order.
    pub(crate) fn start_shared(opts: &[SinkOptions]) -> (u16, Vec<Sink>) {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = shared_port();
            let started: Result<Vec<Starting>, String> = opts
                .iter()
                .map(|o| Self::spawn(&o.clone().port(port)))
                .collect();
            // Wait for every one, even after a failure: each is stopped
            // and reaped either way.
            let waited: Vec<Result<Sink, String>> = match started {
                Ok(s) => s.into_iter().map(Starting::wait).collect(),
                Err(e) => vec![Err(e)],
            };
            match waited.into_iter().collect::<Result<Vec<Sink>, String>>() {
                Ok(sinks) => return (port, sinks),
                Err(e) => last = e,
            }
        }
        panic!("could not start sinks on a shared port after {PORT_ATTEMPTS} tries; last: {last}");
    }

    /// Spawn `sink.py` without waiting for it.
    fn spawn(opts: &SinkOptions) -> Result<Starting, String> {
        let out = tempfile::Builder::new()
            .prefix("sluice-sink-")
            .tempdir()
            .expect("create the sink's folder");
        let mut cmd = Command::new(python());
        cmd.arg(client_script("sink.py"))
            .arg("--host")
            .arg(opts.ip.to_string())
            .arg("--port")
            .arg(opts.port.to_string())
            .arg("--out")
            .arg(out.path())
            .arg("--max-seconds")
            .arg("300");
        if opts.lmtp {
            cmd.arg("--lmtp");
        }
        if opts.no_smtputf8 {
            cmd.arg("--no-smtputf8");
        }
        if let Some(d) = opts.delay {
            cmd.arg("--delay").arg(d.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn sink.py: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel::<String>();
        let mut readers = vec![thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        })];
        let collected = stderr.clone();
        readers.push(thread::spawn(move || {
            let mut r = BufReader::new(stderr_pipe);
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
        let sink = Sink {
            child,
            addr: SocketAddr::new(opts.ip.into(), opts.port),
            out,
            stderr,
            readers,
        };
        Ok(Starting { sink, lines })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The stored messages, in the sink's order.
    pub(crate) fn messages(&self) -> Vec<SinkMessage> {
        let mut names: Vec<String> = std::fs::read_dir(self.out.path())
            .expect("read the sink folder")
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".eml"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let base = self.out.path().join(&name);
                let eml = std::fs::read(base.with_extension("eml")).expect("read a sink .eml");
                let meta = std::fs::read(base.with_extension("json")).expect("read a sink .json");
                let meta = serde_json::from_slice(&meta).expect("parse a sink .json");
                SinkMessage { name, eml, meta }
            })
            .collect()
    }

    /// The number of stored messages.
    pub(crate) fn count(&self) -> usize {
        self.messages().len()
    }

    /// Wait (bounded) until at least `n` messages are stored; panics with
    /// what is there otherwise.
    pub(crate) fn wait_messages(
        &self,
        n: usize,
        timeout: Duration,
        server: &Server,
    ) -> Vec<SinkMessage> {
        wait_for(timeout, || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| {
            panic!(
                "sink {} has {} message(s) after {timeout:?}, expected {n}; \
                 sink events: {:?}\nsink stderr:\n{}\ngateway log:\n{}",
                self.addr,
                self.count(),
                self.events(),
                self.stderr(),
                server.log_text()
            )
        })
    }

    /// The lines of its `events.log`.
    pub(crate) fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.out.path().join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A sink process spawned but not yet listening.
#[derive(Debug)]
struct Starting {
    sink: Sink,
    lines: mpsc::Receiver<String>,
}

impl Starting {
    /// Wait (bounded) for "LISTENING <port>"; on failure the process is
    /// stopped and its stderr returned in the error.
    fn wait(mut self) -> Result<Sink, String> {
        let deadline = Instant::now() + SINK_STARTUP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix("LISTENING ") {
                        let port: u16 = port.trim().parse().expect("sink port");
                        self.sink.addr.set_port(port);
                        return Ok(self.sink);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => {
                    let sink = &mut self.sink;
                    let exited = sink.child.try_wait().ok().flatten();
                    // Stop it, so that its stderr is complete.
                    let _ = sink.child.kill();
                    let _ = sink.child.wait();
                    for r in sink.readers.drain(..) {
                        let _ = r.join();
                    }
                    return Err(format!(
                        "sink.py on {} did not start within {SINK_STARTUP:?} (exit {exited:?}); \
                         stderr:\n{}",
                        sink.addr,
                        sink.stderr()
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Gateway configuration

/// A whole gateway configuration with delivery on: one plain listener,
/// short retries and timeouts, DNS from a test name server.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    /// `hostname`.
    pub(crate) hostname: String,
    /// `local_domains`.
    pub(crate) local_domains: Vec<String>,
    /// The listener address (`127.0.0.1:0` unless a test needs the port
    /// before start).
    pub(crate) listen: SocketAddr,
    /// `[dns] nameservers`.
    pub(crate) nameserver: SocketAddr,
    /// `[delivery] mx_port`.
    pub(crate) mx_port: u16,
    /// `[delivery] relay_host`.
    pub(crate) relay_host: Option<String>,
    /// `[delivery] lmtp`.
    pub(crate) lmtp: Option<String>,
    /// `[queue] retry_initial`.
    pub(crate) retry_initial: String,
    /// `[queue] retry_max`.
    pub(crate) retry_max: String,
    /// `[queue] max_lifetime`.
    pub(crate) max_lifetime: String,
    /// More `[delivery]` entries as (key, TOML value).
    pub(crate) delivery: Vec<(String, String)>,
    /// More `[queue]` entries as (key, TOML value).
    pub(crate) queue: Vec<(String, String)>,
    /// `[limits]` entries as (key, TOML value).
    pub(crate) limits: Vec<(String, String)>,
}

impl Gateway {
    /// Local domain `example.com`, MX delivery to `mx_port` with DNS from
    /// `nameserver`.
    pub(crate) fn new(nameserver: SocketAddr, mx_port: u16) -> Self {
        Self {
            hostname: "gw.sluice.test".into(),
            local_domains: vec!["example.com".into()],
            listen: "127.0.0.1:0".parse().expect("an address"),
            nameserver,
            mx_port,
            relay_host: None,
            lmtp: None,
            retry_initial: "1s".into(),
            retry_max: "2s".into(),
            max_lifetime: "5m".into(),
            delivery: Vec::new(),
            queue: Vec::new(),
            limits: Vec::new(),
        }
    }

    /// Set the retry schedule.
    pub(crate) fn retry(mut self, initial: &str, max: &str) -> Self {
        self.retry_initial = initial.into();
        self.retry_max = max.into();
        self
    }

    /// Add one `[delivery]` entry (`value` is TOML).
    pub(crate) fn delivery(mut self, key: &str, value: &str) -> Self {
        self.delivery.push((key.into(), value.into()));
        self
    }

    /// Add one `[queue]` entry (`value` is TOML).
    pub(crate) fn queue(mut self, key: &str, value: &str) -> Self {
        self.queue.push((key.into(), value.into()));
        self
    }

    /// Add one `[limits]` entry (`value` is TOML).
    pub(crate) fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.push((key.into(), value.into()));
        self
    }

    /// The TOML text for a data folder.
    pub(crate) fn to_toml(&self, data_dir: &Path) -> String {
        let quoted: Vec<String> = self
            .local_domains
            .iter()
            .map(|d| format!("{d:?}"))
            .collect();
        let mut t = String::new();
        writeln!(t, "data_dir = {:?}", data_dir.display().to_string()).unwrap();
        writeln!(t, "hostname = {:?}", self.hostname).unwrap();
        writeln!(t, "local_domains = [{}]", quoted.join(", ")).unwrap();
        writeln!(t, "relay_networks = [\"127.0.0.0/8\"]").unwrap();
        writeln!(t, "\n[[listener]]\naddress = \"{}\"", self.listen).unwrap();
        if !self.limits.is_empty() {
            writeln!(t, "\n[limits]").unwrap();
            for (k, v) in &self.limits {
                writeln!(t, "{k} = {v}").unwrap();
            }
        }
        writeln!(t, "\n[queue]\ndeliver = true").unwrap();
        writeln!(t, "retry_initial = {:?}", self.retry_initial).unwrap();
        writeln!(t, "retry_max = {:?}", self.retry_max).unwrap();
        writeln!(t, "max_lifetime = {:?}", self.max_lifetime).unwrap();
        for (k, v) in &self.queue {
            writeln!(t, "{k} = {v}").unwrap();
        }
        writeln!(t, "\n[delivery]\nmx_port = {}", self.mx_port).unwrap();
        writeln!(t, "connect_timeout = \"2s\"").unwrap();
        if let Some(r) = &self.relay_host {
            writeln!(t, "relay_host = {r:?}").unwrap();
        }
        if let Some(l) = &self.lmtp {
            writeln!(t, "lmtp = {l:?}").unwrap();
        }
        for (k, v) in &self.delivery {
            writeln!(t, "{k} = {v}").unwrap();
        }
        writeln!(
            t,
            "\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"",
            self.nameserver
        )
        .unwrap();
        t
    }

    /// Write the config into `sb` and start the gateway.
    pub(crate) fn start(&self, sb: &Sandbox) -> Server {
        sb.start_toml(&self.to_toml(&sb.data_dir()), 1)
    }
}

// ---------------------------------------------------------------------------
// Sending

/// Send one message over a fresh connection; returns the queue id.
pub(crate) fn send(addr: SocketAddr, from: &str, to: &[&str], body: &[u8]) -> String {
    let mut c = SmtpConn::ehlo(addr, "client.example");
    let r = c.send_mail(from, to, body);
    let id = r
        .queue_id()
        .unwrap_or_else(|| panic!("message from <{from}> to {to:?} not accepted: {r:?}"));
    c.expect("QUIT", 221);
    id
}

/// Send one message with raw MAIL and RCPT command lines (for parameters);
/// returns the queue id.
pub(crate) fn send_raw(addr: SocketAddr, mail: &str, rcpts: &[&str], body: &[u8]) -> String {
    let mut c = SmtpConn::ehlo(addr, "client.example");
    c.expect(mail, 250);
    for r in rcpts {
        c.expect(r, 250);
    }
    c.expect("DATA", 354);
    let mut wire = crate::harness::dot_stuff(body);
    wire.extend_from_slice(b".\r\n");
    c.write(&wire);
    let r: Reply = c.reply();
    let id = r
        .queue_id()
        .unwrap_or_else(|| panic!("message {mail:?} not accepted: {r:?}"));
    c.expect("QUIT", 221);
    id
}

/// A small CRLF message with a subject and a unique test id header.
pub(crate) fn message(subject: &str, test_id: &str) -> Vec<u8> {
    crate::harness::crlf(&format!(
        "From: Alice <alice@example.com>\n\
         To: someone@example.net\n\
         Subject: {subject}\n\
         X-Test-Id: {test_id}\n\
         Message-ID: <{test_id}@client.example>\n\
         \n\
         Hello,\n\
         this is {test_id}.\n"
    ))
}

// ---------------------------------------------------------------------------
// Reading results

/// The value of the first header field `name` of `msg` (case-insensitive,
/// unfolded), from the header section only.
pub(crate) fn header_value(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let mut found: Option<String> = None;
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// Split off the first header field (with its continuation lines) of a
/// CRLF message: `(field, rest)`.
pub(crate) fn split_first_field(msg: &[u8]) -> (&[u8], &[u8]) {
    let mut end = 0;
    loop {
        let Some(pos) = msg[end..].windows(2).position(|w| w == b"\r\n") else {
            return (msg, &[]);
        };
        end += pos + 2;
        if !matches!(msg.get(end), Some(b' ' | b'\t')) {
            return msg.split_at(end);
        }
    }
}

/// The files in the Maildir `new/` folder of `address` (`local@domain`)
/// under the data folder, sorted by name.
pub(crate) fn maildir(sb: &Sandbox, address: &str) -> Vec<Vec<u8>> {
    let (local, domain) = address.rsplit_once('@').expect("local@domain");
    let dir = sb
        .data_dir()
        .join("mail")
        .join(domain.to_ascii_lowercase())
        .join(local.to_ascii_lowercase())
        .join("new");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).expect("read a Maildir file"))
        .collect()
}

/// Wait (bounded) for at least `n` files in the Maildir of `address`.
pub(crate) fn wait_maildir(
    sb: &Sandbox,
    address: &str,
    n: usize,
    timeout: Duration,
    server: &Server,
) -> Vec<Vec<u8>> {
    wait_for(timeout, || {
        let m = maildir(sb, address);
        (m.len() >= n).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "Maildir of {address} has {} message(s) after {timeout:?}, expected {n}; log:\n{}",
            maildir(sb, address).len(),
            server.log_text()
        )
    })
}

/// Wait (bounded) until the spool queue holds no message.
pub(crate) fn wait_queue_empty(sb: &Sandbox, timeout: Duration, server: &Server) {
    let spool = sb.spool();
    if wait_for(timeout, || spool.ids().is_empty().then_some(())).is_none() {
        panic!(
            "the queue still holds {:?} after {timeout:?}; log:\n{}",
            spool.ids(),
            server.log_text()
        );
    }
}

/// A parsed DSN (see `tests/clients/dsn.py` for the shape).
#[derive(Debug, Clone)]
pub(crate) struct Dsn {
    /// The parser's JSON output.
    pub(crate) json: Value,
    /// The raw message, for failure messages.
    pub(crate) raw: String,
}

impl Dsn {
    /// Parse `msg` with Python's `email` package.
    pub(crate) fn parse(msg: &[u8]) -> Dsn {
        let mut cmd = Command::new(python());
        cmd.arg(client_script("dsn.py")).arg("-");
        let out = run_bounded(&mut cmd, Some(msg));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "dsn.py failed ({}): {}\nmessage:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(msg)
        );
        let json = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("dsn.py output {stdout:?}: {e}"));
        Dsn {
            json,
            raw: String::from_utf8_lossy(msg).into_owned(),
        }
    }

    /// An outer header field (lower-case name).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.json["headers"][name].as_str().unwrap_or("")
    }

    /// The content types of the report's parts, in order.
    pub(crate) fn parts(&self) -> Vec<String> {
        self.json["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// A per-message field of the delivery-status part.
    pub(crate) fn per_message(&self, name: &str) -> Option<&str> {
        self.json["per_message"][name].as_str()
    }

    /// The per-recipient blocks.
    pub(crate) fn recipients(&self) -> Vec<Value> {
        self.json["recipients"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The only recipient block; panics unless there is exactly one.
    pub(crate) fn only_recipient(&self) -> Value {
        let r = self.recipients();
        assert_eq!(
            r.len(),
            1,
            "expected one recipient block in the DSN:\n{}",
            self.raw
        );
        r[0].clone()
    }

    /// The `Subject` of the returned header section or message.
    pub(crate) fn original_subject(&self) -> Option<&str> {
        self.json["returned_headers"]["subject"]
            .as_str()
            .or_else(|| self.json["returned_message"]["headers"]["subject"].as_str())
    }

    /// Check the structure every failure DSN from us has: a multipart/report
    /// of the given report type from the mailer daemon, a human part, the
    /// status part and the returned original.
    pub(crate) fn assert_failure_report(&self, report_type: &str) {
        let j = &self.json;
        assert_eq!(
            j["content_type"], "multipart/report",
            "DSN type:\n{}",
            self.raw
        );
        assert_eq!(
            j["report_type"], report_type,
            "DSN report-type:\n{}",
            self.raw
        );
        let parts = self.parts();
        assert_eq!(parts.len(), 3, "DSN parts {parts:?}:\n{}", self.raw);
        assert_eq!(parts[0], "text/plain", "DSN first part:\n{}", self.raw);
        assert_eq!(
            parts[1],
            format!("message/{report_type}"),
            "DSN second part:\n{}",
            self.raw
        );
        assert!(
            self.header("from").contains("MAILER-DAEMON@"),
            "DSN From: {}",
            self.header("from")
        );
        assert!(
            self.header("auto-submitted").starts_with("auto-replied"),
            "DSN Auto-Submitted: {:?}",
            self.header("auto-submitted")
        );
        assert!(
            self.per_message("reporting-mta")
                .is_some_and(|m| m.starts_with("dns;")),
            "DSN Reporting-MTA: {:?}\n{}",
            j["per_message"],
            self.raw
        );
        for r in self.recipients() {
            assert_eq!(r["action"], "failed", "DSN Action: {r}\n{}", self.raw);
        }
    }
}

/// Parse a Maildir file holding a DSN and check its local-delivery head:
/// `Return-Path: <>` and `Delivered-To: to`.
pub(crate) fn parse_delivered_dsn(file: &[u8], to: &str) -> Dsn {
    let want = format!("Return-Path: <>\r\nDelivered-To: {to}\r\n");
    assert!(
        file.starts_with(want.as_bytes()),
        "a DSN in the Maildir of {to} starts with {want:?}, got:\n{}",
        String::from_utf8_lossy(&file[..file.len().min(300)])
    );
    Dsn::parse(file)
}

// ---------------------------------------------------------------------------
// The log

/// The "delivery" records of `queue_id`, in order.
pub(crate) fn deliveries(server: &Server, queue_id: &str) -> Vec<Value> {
    server
        .log_records("delivery")
        .into_iter()
        .filter(|v| v["fields"]["queue_id"] == queue_id)
        .collect()
}

/// Wait (bounded) for a "delivery" record of `queue_id` with `result`;
/// returns its fields.
pub(crate) fn wait_delivery(
    server: &Server,
    queue_id: &str,
    result: &str,
    timeout: Duration,
) -> Value {
    server
        .wait_log("delivery", timeout, |v| {
            v["fields"]["queue_id"] == queue_id && v["fields"]["result"] == result
        })
        .map(|v| v["fields"].clone())
        .unwrap_or_else(|| {
            panic!(
                "no delivery record with result {result} for {queue_id} within {timeout:?}; log:\n{}",
                server.log_text()
            )
        })
}

/// Wait (bounded) for the "message done" record of `queue_id`.
pub(crate) fn wait_done(server: &Server, queue_id: &str, timeout: Duration) -> Value {
    server
        .wait_log("message done", timeout, |v| {
            v["fields"]["queue_id"] == queue_id
        })
        .map(|v| v["fields"].clone())
        .unwrap_or_else(|| {
            panic!(
                "message {queue_id} not done within {timeout:?}; log:\n{}",
                server.log_text()
            )
        })
}

/// The "bounced" records of `queue_id`.
pub(crate) fn bounces(server: &Server, queue_id: &str) -> Vec<Value> {
    server
        .log_records("bounced")
        .into_iter()
        .filter(|v| v["fields"]["queue_id"] == queue_id)
        .collect()
}

// ---------------------------------------------------------------------------
// sluice queue

/// Run `sluice queue --config CONFIG ARGS...`; returns (success, stdout,
/// stderr).
pub(crate) fn queue_cli(sb: &Sandbox, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(crate::harness::sluice_bin());
    cmd.arg("queue")
        .arg("--config")
        .arg(sb.config_path())
        .args(args);
    let out = run_bounded(&mut cmd, None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a `sluice queue` command that must succeed, retrying (bounded) while
/// the gateway says the message is being delivered right now.
pub(crate) fn queue_ok(sb: &Sandbox, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, stdout, stderr) = queue_cli(sb, args);
        if ok {
            return stdout;
        }
        let busy = stderr.contains("being delivered right now");
        if !busy || Instant::now() >= deadline {
            panic!("sluice queue {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `sluice queue ARGS... --json`, parsed.
pub(crate) fn queue_json(sb: &Sandbox, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let out = queue_ok(sb, &all);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("sluice queue {all:?} output {out:?}: {e}"))
}

/// The envelope of `id` in `sluice queue list --json`, if listed.
pub(crate) fn listed(sb: &Sandbox, id: &str) -> Option<Value> {
    queue_json(sb, &["list"])["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"] == id)
        .cloned()
}
