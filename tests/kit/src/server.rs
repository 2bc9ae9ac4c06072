//! A running `sluice serve`, its JSON log collected as it comes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{DELIVERY, STARTUP, sluice_bin};

/// A running `sluice serve`, killed and reaped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addrs: Vec<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Start `sluice serve --config PATH --log-format json` and wait (at
    /// most [`STARTUP`]) for `listeners` "listening" log lines; panics with
    /// the log when the server exits or does not come up.
    #[must_use]
    pub fn start(config: &Path, listeners: usize) -> Server {
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
        // Drains stderr for the whole life of the process so the pipe never
        // fills; ends at EOF (the process exited).
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
            exited: None,
        };
        let deadline = Instant::now() + STARTUP;
        while server.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(addr) = listening_address(&line) {
                        server.addrs.push(addr);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        // Give the reader a moment to collect the last lines.
                        thread::sleep(Duration::from_millis(100));
                        panic!(
                            "sluice exited during startup with {status}; log:\n{}",
                            server.log_text()
                        );
                    }
                    assert!(
                        !left.is_zero(),
                        "sluice did not report {listeners} listeners within {STARTUP:?}; log:\n{}",
                        server.log_text()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(5));
                    panic!(
                        "sluice closed its log during startup (exit {status:?}); log:\n{}",
                        server.log_text()
                    );
                }
            }
        }
        server
    }

    /// The address of listener `i` (config order).
    #[must_use]
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All log lines so far.
    #[must_use]
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The log so far as one text, for failure messages.
    #[must_use]
    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Whether a log line contains `needle`.
    #[must_use]
    pub fn logged(&self, needle: &str) -> bool {
        self.log_lines().iter().any(|l| l.contains(needle))
    }

    /// Parsed JSON log records whose `fields.message` is `message`.
    #[must_use]
    pub fn log_records(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }

    /// Wait (at most `timeout`) for a log record with this message that
    /// `pred` accepts.
    pub fn wait_log(
        &self,
        message: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.log_records(message).into_iter().find(&pred) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like [`Server::wait_log`] with [`DELIVERY`] as the deadline, but
    /// the record must come: panics with the log otherwise.
    pub fn wait_record(&self, message: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_log(message, DELIVERY, pred).unwrap_or_else(|| {
            panic!(
                "no {message:?} log record as expected within {DELIVERY:?}; log:\n{}",
                self.log_text()
            )
        })
    }

    /// The lines the policies logged (records of target `sluice::policy`
    /// with a `stage`), in order.
    #[must_use]
    pub fn policy_logs(&self) -> Vec<String> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "sluice::policy" && v["fields"]["stage"].is_string())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Send a signal by name (`TERM`, `INT`, `HUP`) with kill(1), by PID.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill(1): {e}"));
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.join_reader();
    }

    /// Wait (at most `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
        self.join_reader();
        self.exited
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The reader ends at EOF, which follows the exit.
        self.join_reader();
    }
}

/// The address of a "listening" JSON log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["fields"]["message"] != "listening" {
        return None;
    }
    v["fields"]["address"].as_str()?.parse().ok()
}
