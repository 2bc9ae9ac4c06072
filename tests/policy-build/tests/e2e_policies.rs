//! End to end: each shipped policy loaded by the real gateway
//! (`target/debug/sluice serve`) and exercised by a raw SMTP client over
//! loopback; outcomes read from the replies, the delivered Maildir files,
//! the spool and the JSON log.
//!
//! Every server listens on `127.0.0.1:0` and is killed (by PID) when its
//! guard drops; every wait has a deadline. DNS answers come from the
//! gateway's static `[dns.a]` table; anything else goes to a name server
//! at `127.0.0.1:9`, where nothing answers, so no query leaves the machine.
//! Compiled policies are cached in `target/policies/engine-cache`, so
//! only the first start after a policy changes pays for compiling it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_policy_build::{POLICY_TARGET_DIR, policy};

/// How long a server may take to listen (a debug build compiles each
/// policy that is not in the cache yet: seconds).
const STARTUP: Duration = Duration::from_secs(60);
/// How long one SMTP reply may take.
const REPLY: Duration = Duration::from_secs(15);
/// How long a delivery may take to show up.
const DELIVERY: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The gateway

/// `target/debug/sluice` (this test runs from `target/debug/deps/`).
fn sluice_bin() -> PathBuf {
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

/// The component of `policies/<dir>`.
fn wasm(dir: &str) -> &'static str {
    policy(dir)
        .unwrap_or_else(|| panic!("policies/{dir} was not built"))
        .wasm
}

/// A temporary folder with the config and the data folder of one server.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("sluice-policy-e2e-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir: {e}")),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The common part of a config: one plain listener, then a PROXY
    /// listener trusting loopback when `proxy`; `rest` is appended (the
    /// `[[policy]]` entries, `[dns.a]`, …).
    fn config(&self, proxy: bool, deliver: bool, rest: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "data_dir = {:?}", self.data_dir().display().to_string());
        t.push_str("hostname = \"mx.test.example\"\nlocal_domains = [\"example.com\"]\n");
        t.push_str(
            "relay_networks = [\"127.0.0.0/8\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
        );
        if proxy {
            t.push_str(
                "\n[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            );
        }
        let _ = writeln!(t, "\n[queue]\ndeliver = {deliver}");
        t.push_str("\n[delivery]\nconnect_timeout = \"2s\"\n");
        let cache = Path::new(POLICY_TARGET_DIR).join("engine-cache");
        let _ = writeln!(
            t,
            "\n[policy_engine]\ncache_dir = {:?}\nmax_instances = 64\nmax_memory = \"64MiB\"",
            cache.display().to_string()
        );
        t.push('\n');
        t.push_str(rest);
        t
    }

    /// Write the config and start a server with `listeners` listeners.
    fn start(&self, config: &str, listeners: usize) -> Server {
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("write config: {e}"));
        Server::start(&path, listeners)
    }

    /// The files delivered to `local@domain`'s Maildir.
    fn maildir(&self, domain: &str, local: &str) -> Vec<Vec<u8>> {
        let dir = self
            .data_dir()
            .join("mail")
            .join(domain)
            .join(local)
            .join("new");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect()
    }

    /// Wait (bounded) for `count` messages in a Maildir.
    fn wait_maildir(&self, domain: &str, local: &str, count: usize) -> Vec<Vec<u8>> {
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
    fn spooled_envelopes(&self) -> Vec<Value> {
        let dir = self.data_dir().join("spool").join("queue");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }
}

/// A running `sluice serve`, killed and reaped on drop.
struct Server {
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
        // Drains the log until the process exits, so the pipe never fills.
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

    fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    fn log_lines(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// JSON log records whose message is `message`.
    fn records(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }

    /// Wait (bounded) for a record with this message that `pred` accepts.
    fn wait_record(&self, message: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DELIVERY;
        loop {
            if let Some(v) = self.records(message).into_iter().find(&pred) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log record as expected within {DELIVERY:?}; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a log line contains `needle`.
    fn logged(&self, needle: &str) -> bool {
        self.log_lines().iter().any(|l| l.contains(needle))
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
// A raw SMTP client

struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One reply: the code and its lines joined by newlines.
#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

impl Smtp {
    /// Connect and read the greeting.
    fn connect(addr: SocketAddr) -> (Smtp, Reply) {
        Smtp::connect_with(addr, None)
    }

    /// Connect, send a PROXY v1 header claiming `client` if given, and
    /// read the greeting.
    fn connect_with(addr: SocketAddr, client: Option<&str>) -> (Smtp, Reply) {
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
            smtp.send(&format!("PROXY TCP4 {ip} 127.0.0.1 5555 25"));
        }
        let greeting = smtp.reply();
        (smtp, greeting)
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    fn reply(&mut self) -> Reply {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("connection closed while waiting for a reply (so far {text:?})"),
                Ok(_) => {}
                Err(e) => panic!("reading a reply: {e} (so far {text:?})"),
            }
            let line = line.trim_end();
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not a reply line: {line:?}"));
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, text };
            }
        }
    }

    /// Send a command; its reply.
    fn cmd(&mut self, line: &str) -> Reply {
        self.send(line);
        self.reply()
    }

    /// Send a command and expect this reply code.
    fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line);
        assert_eq!(reply.code, code, "{line} got {reply:?}");
        reply
    }

    /// DATA with this message (LF line ends become CRLF); the final reply.
    fn data(&mut self, message: &str) -> Reply {
        self.expect("DATA", 354);
        let mut body = message.replace('\n', "\r\n");
        if !body.ends_with("\r\n") {
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.stream
            .write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("send message: {e}"));
        self.reply()
    }

    /// After a refused connection: whether the server closed it.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// DNS for these tests: static answers, and nothing else reachable.
fn dns(static_a: &[(&str, &[&str])]) -> String {
    let mut t = String::from("[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n[dns.a]\n");
    for (name, addrs) in static_a {
        let quoted: Vec<String> = addrs.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(t, "{name:?} = [{}]", quoted.join(", "));
    }
    t
}

// ---------------------------------------------------------------------------
// The policies

#[test]
fn access_allows_and_denies_at_every_stage() {
    let sandbox = Sandbox::new();
    let policy = format!(
        r#"[[policy]]
name = "access"
path = {:?}
capabilities = ["metrics"]
[policy.config]
deny_networks = ["203.0.113.0/24"]
allow_networks = ["203.0.113.99"]
deny_helo = ["*.bad.example"]
deny_senders = ["@spam.example"]
deny_recipients = ["blocked@example.com"]
reject_text = "Access denied by policy"
"#,
        wasm("access")
    );
    let server = sandbox.start(&sandbox.config(true, true, &policy), 2);

    // Connect: a denied network is refused and disconnected; the allowed
    // exception inside it gets the greeting.
    let (mut denied, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.7"));
    assert_eq!(greeting.code, 550, "{greeting:?}");
    assert!(
        greeting.text.contains("5.7.1 Access denied by policy"),
        "{greeting:?}"
    );
    assert!(denied.closed());
    let (mut allowed, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.99"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    allowed.expect("QUIT", 221);

    let (mut c, greeting) = Smtp::connect(server.addr(0));
    assert_eq!(greeting.code, 220);
    let r = c.expect("EHLO host.bad.example", 550);
    assert!(r.text.contains("Access denied by policy"), "{r:?}");
    c.expect("EHLO client.example", 250);
    let r = c.expect("MAIL FROM:<x@SPAM.example>", 550);
    assert!(r.text.contains("5.7.1"), "{r:?}");
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<blocked@example.com>", 550);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("From: ann@sender.example\nSubject: hello\n\nhi\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    let delivered = sandbox.wait_maildir("example.com", "user", 1);
    assert_eq!(delivered.len(), 1, "log:\n{}", server.log_text());
    assert!(sandbox.maildir("example.com", "blocked").is_empty());
}

#[test]
fn rate_limit_counts_across_sessions_and_fails_open() {
    let sandbox = Sandbox::new();
    let policies = format!(
        r#"[[policy]]
name = "rate-limit"
path = {path:?}
capabilities = ["kv", "clock"]
[policy.config]
window = "1h"
messages_per_sender = 2
recipients_per_ip = 3

# The same policy without the kv capability: it cannot count, logs that
# and lets mail through (fail open).
[[policy]]
name = "rate-limit-open"
path = {path:?}
[policy.config]
messages_per_ip = 1
"#,
        path = wasm("rate-limit")
    );
    let server = sandbox.start(&sandbox.config(false, false, &policies), 1);

    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<c@example.com>", 250);
    let r = c.expect("RCPT TO:<d@example.com>", 451);
    assert!(
        r.text
            .contains("4.7.1 rate limit exceeded, try again later"),
        "{r:?}"
    );
    c.expect("RSET", 250);
    let r = c.expect("MAIL FROM:<ann@sender.example>", 451);
    assert!(r.text.contains("4.7.1"), "{r:?}");
    c.expect("QUIT", 221);

    // A new session (a new instance) sees the same counters.
    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ANN@sender.example>", 451);
    c.expect("MAIL FROM:<bob@sender.example>", 250);
    c.expect("RCPT TO:<e@example.com>", 451);
    c.expect("QUIT", 221);

    assert!(
        server.logged("rate-limit state unavailable (access denied"),
        "the policy without kv logs that it lets mail through; log:\n{}",
        server.log_text()
    );
}

#[test]
fn dnsbl_rejects_listed_clients_at_connect() {
    let sandbox = Sandbox::new();
    let rest = format!(
        r#"[[policy]]
name = "dnsbl"
path = {:?}
capabilities = ["dns", "metrics"]
[policy.config]
zones = ["zen.test"]
codes = ["127.0.0.2"]

{}"#,
        wasm("dnsbl"),
        dns(&[
            ("7.113.0.203.zen.test", &["127.0.0.2"]),
            ("9.113.0.203.zen.test", &["127.0.0.9"]),
            ("8.113.0.203.zen.test", &[]),
        ])
    );
    let server = sandbox.start(&sandbox.config(true, true, &rest), 2);

    let (mut listed, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.7"));
    assert_eq!(greeting.code, 554, "{greeting:?}");
    assert_eq!(
        greeting.text,
        "5.7.1 Service unavailable; client [203.0.113.7] blocked using zen.test"
    );
    assert!(listed.closed());

    // Listed with a code that is not configured: not blocked.
    let (mut other_code, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.9"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    other_code.expect("QUIT", 221);

    let (mut clean, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.8"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    clean.expect("EHLO client.example", 250);
    clean.expect("MAIL FROM:<ann@sender.example>", 250);
    clean.expect("RCPT TO:<user@example.com>", 250);
    assert_eq!(clean.data("Subject: hi\n\nhello\n").code, 250);
    clean.expect("QUIT", 221);
    assert_eq!(sandbox.wait_maildir("example.com", "user", 1).len(), 1);

    // Loopback clients are not looked up.
    let (mut local, greeting) = Smtp::connect(server.addr(0));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    local.expect("QUIT", 221);
    assert!(server.logged("client 203.0.113.7 is listed in zen.test (127.0.0.2)"));
}

#[test]
fn dnsbl_tags_listed_clients_and_survives_dns_failures() {
    let sandbox = Sandbox::new();
    let rest = format!(
        r#"[[policy]]
name = "dnsbl"
path = {:?}
capabilities = ["dns"]
[policy.config]
zones = ["down.test", "zen.test"]
action = "tag"

{}"#,
        wasm("dnsbl"),
        // down.test is not in the table: its lookups go to the silent name
        // server and fail temporarily.
        dns(&[("7.113.0.203.zen.test", &["127.0.0.2"])])
    );
    let server = sandbox.start(&sandbox.config(true, true, &rest), 2);

    let (mut c, greeting) = Smtp::connect_with(server.addr(1), Some("203.0.113.7"));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("X-DNSBL: forged.example\nSubject: hi\n\nhello\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    let delivered = sandbox.wait_maildir("example.com", "user", 1);
    assert_eq!(delivered.len(), 1, "log:\n{}", server.log_text());
    let text = String::from_utf8_lossy(&delivered[0]);
    assert!(text.contains("X-DNSBL: zen.test\r\n"), "{text}");
    assert!(
        !text.contains("forged.example"),
        "the client's own X-DNSBL is removed: {text}"
    );
    assert!(
        server.logged("down.test: lookup of 7.113.0.203.down.test failed temporarily"),
        "log:\n{}",
        server.log_text()
    );
}

#[test]
fn header_rules_reject_quarantine_and_edit_headers() {
    let sandbox = Sandbox::new();
    let policy = format!(
        r#"[[policy]]
name = "header-rules"
path = {:?}

[[policy.config.rules]]
header = "Subject"
pattern = "(?i)viagra"
action = "reject"
text = "No pills here"

[[policy.config.rules]]
header = "X-Spam-Score"
pattern = "."
action = "remove_header"

[[policy.config.rules]]
header = "*"
pattern = "(?i)^subject:.*newsletter"
action = "add_header"
add = "X-Flag: bulk"

[[policy.config.rules]]
header = "Subject"
pattern = "^hold"
action = "quarantine"
text = "held for review"
"#,
        wasm("header-rules")
    );
    let server = sandbox.start(&sandbox.config(false, true, &policy), 1);

    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("Subject: Cheap VIAGRA\n\nbuy\n");
    assert_eq!(r.code, 550, "{r:?}");
    assert_eq!(r.text, "5.7.1 No pills here");

    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data("Subject: Monthly Newsletter\nX-Spam-Score: 9.5\n\nnews\n");
    assert_eq!(r.code, 250, "{r:?}");

    c.expect("MAIL FROM:<ann@sender.example>", 250);
    c.expect("RCPT TO:<other@example.com>", 250);
    let r = c.data("Subject: hold this one\n\nx\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    let delivered = sandbox.wait_maildir("example.com", "user", 1);
    assert_eq!(
        delivered.len(),
        1,
        "only the newsletter is delivered; log:\n{}",
        server.log_text()
    );
    let text = String::from_utf8_lossy(&delivered[0]);
    assert!(text.contains("X-Flag: bulk\r\n"), "{text}");
    assert!(!text.contains("X-Spam-Score"), "{text}");
    assert!(text.contains("Subject: Monthly Newsletter"), "{text}");

    // The quarantined message waits in the spool, held, with its reason.
    let deadline = Instant::now() + DELIVERY;
    let held = loop {
        let held: Vec<Value> = sandbox
            .spooled_envelopes()
            .into_iter()
            .filter(|e| e["held"] == true)
            .collect();
        if !held.is_empty() || Instant::now() >= deadline {
            break held;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(held.len(), 1, "log:\n{}", server.log_text());
    assert_eq!(held[0]["quarantine"], "held for review");
    assert!(sandbox.maildir("example.com", "other").is_empty());
}

#[test]
fn domain_router_routes_local_relay_and_reject() {
    let sandbox = Sandbox::new();
    let port = closed_port();
    let policy = format!(
        r#"[[policy]]
name = "domain-router"
path = {:?}
[policy.config]
local_domains = ["example.com", "*.corp.example"]
[policy.config.routes]
"partner.example" = {{ relay = "relay.partner.test:{port}", tls = "none" }}
"gone.example" = {{ reject = "550 5.1.2 no mail for this domain" }}

{}"#,
        wasm("domain-router"),
        dns(&[("relay.partner.test", &["127.0.0.1"])])
    );
    let server = sandbox.start(&sandbox.config(false, true, &policy), 1);

    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@example.com>", 250);
    c.expect("RCPT TO:<user@eu.corp.example>", 250);
    c.expect("RCPT TO:<bob@partner.example>", 250);
    c.expect("RCPT TO:<carol@gone.example>", 250);
    let r = c.data("Subject: routes\n\nhello\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);

    // A domain the gateway does not know is local because the policy says so.
    let delivered = sandbox.wait_maildir("eu.corp.example", "user", 1);
    assert_eq!(delivered.len(), 1, "log:\n{}", server.log_text());

    // The partner's relay host is down: deferred, naming that host (the
    // recipient's own MX would have been a DNS failure, with no remote).
    let deferred = server.wait_record("delivery", |v| {
        v["fields"]["rcpt"] == "bob@partner.example" && v["fields"]["result"] == "deferred"
    });
    assert_eq!(
        deferred["fields"]["remote"], "relay.partner.test",
        "{deferred}"
    );
    assert!(
        deferred["fields"]["diagnostic"]
            .as_str()
            .is_some_and(|d| d.contains("connect failed")),
        "{deferred}"
    );

    // gone.example fails with the configured reply: in the envelope of the
    // message still queued for bob, ...
    let deadline = Instant::now() + DELIVERY;
    let carol = loop {
        let found = sandbox.spooled_envelopes().into_iter().find_map(|env| {
            env["recipients"]
                .as_array()?
                .iter()
                .find(|r| r["address"] == "carol@gone.example" && r["state"] == "failed")
                .cloned()
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "carol@gone.example did not fail; spool: {:?}\nlog:\n{}",
            sandbox.spooled_envelopes(),
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(carol["status"], "5.1.2", "{carol}");
    assert!(
        carol["diagnostic"]
            .as_str()
            .is_some_and(|d| d.contains("no mail for this domain")),
        "{carol}"
    );

    // ... and, for a message that ends there, in the bounce to the sender.
    let (mut c, _) = Smtp::connect(server.addr(0));
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<ann@example.com>", 250);
    c.expect("RCPT TO:<dave@gone.example>", 250);
    assert_eq!(c.data("Subject: bounce me\n\nx\n").code, 250);
    c.expect("QUIT", 221);
    let bounces = sandbox.wait_maildir("example.com", "ann", 1);
    assert_eq!(bounces.len(), 1, "log:\n{}", server.log_text());
    let dsn = String::from_utf8_lossy(&bounces[0]);
    assert!(
        dsn.contains("dave@gone.example") && dsn.contains("5.1.2"),
        "{dsn}"
    );
    assert!(dsn.contains("no mail for this domain"), "{dsn}");
}
