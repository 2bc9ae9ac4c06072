//! Sandbox faults through the real gateway: a policy that traps, loops,
//! allocates 1 GiB or returns a giant string gets its configured
//! `on_error` outcome for that call, the log names policy, stage and cause,
//! and the gateway keeps serving — the same session and others.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::guests;
use crate::harness::{Sandbox, SmtpConn};

/// The `faulty` test component (built once per test process).
fn faulty_wasm() -> PathBuf {
    guests::guest_wasm("faulty")
}

fn config(sb: &Sandbox, on_error: &str) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"

[queue]
deliver = false

[policy_engine]
max_memory = "64MiB"

[[policy]]
name = "faulty"
path = "{wasm}"
on_error = "{on_error}"
max_memory = "32MiB"
timeout = "100ms"
[policy.config]
mode = "ok"
"#,
        data = sb.data_dir().display(),
        wasm = faulty_wasm().display(),
    )
}

/// A client that keeps sending healthy transactions while faults happen;
/// returns how many it completed, every one with a 250.
fn healthy_traffic(addr: std::net::SocketAddr, stop_after: Duration) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let deadline = Instant::now() + stop_after;
        let mut done = 0;
        while Instant::now() < deadline && done < 500 {
            let mut c = SmtpConn::ehlo(addr, "healthy.example");
            c.expect("MAIL FROM:<a@example.org>", 250);
            c.expect("RCPT TO:<ok@example.com>", 250);
            c.expect("DATA", 354);
            let r = c.cmd("Subject: healthy\r\n\r\nfine\r\n.");
            assert_eq!(r.code, 250, "healthy transaction during faults: {r:?}");
            c.expect("QUIT", 221);
            done += 1;
        }
        done
    })
}

#[test]
fn faults_are_contained_with_tempfail() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&config(&sb, "tempfail"), 1);
    let addr = server.addr(0);
    let healthy = healthy_traffic(addr, Duration::from_secs(8));
    let mut c = SmtpConn::ehlo(addr, "faulty.example");
    c.expect("MAIL FROM:<a@example.org>", 250);
    for mode in ["trap", "panic", "loop", "alloc", "bigstring"] {
        let started = Instant::now();
        let r = c.cmd(&format!("RCPT TO:<{mode}@example.com>"));
        assert!(
            r.is("451 4.3.0"),
            "{mode}: the faulty call gets on_error = tempfail: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode}: answered in {:?}",
            started.elapsed()
        );
        // The same session goes on with a fresh instance.
        c.expect("RCPT TO:<ok@example.com>", 250);
    }
    c.expect("DATA", 354);
    let r = c.cmd("Subject: after faults\r\n\r\nstill here\r\n.");
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221);
    let n = healthy.join().expect("healthy client");
    assert!(n > 0, "no healthy transaction completed");

    // The log says which policy, which stage and what went wrong.
    let failures = server.log_records("policy call failed");
    assert!(
        failures.len() >= 5,
        "expected a log record per fault, got {}:\n{}",
        failures.len(),
        server.log_text()
    );
    let text = server.log_text();
    for cause in ["unreachable", "deadline", "memory"] {
        assert!(
            text.to_lowercase().contains(cause),
            "no {cause:?} in the failure log:\n{text}"
        );
    }
    for f in &failures {
        assert_eq!(f["fields"]["policy"], "faulty", "{f}");
        assert_eq!(f["fields"]["stage"], "rcpt", "{f}");
    }
}

#[test]
fn on_error_reject_and_continue() {
    for (on_error, want) in [("reject", 550), ("continue", 250)] {
        let sb = Sandbox::new();
        let server = sb.start_toml(&config(&sb, on_error), 1);
        let mut c = SmtpConn::ehlo(server.addr(0), "faulty.example");
        c.expect("MAIL FROM:<a@example.org>", 250);
        let r = c.cmd("RCPT TO:<trap@example.com>");
        assert_eq!(r.code, want, "on_error = {on_error}: {r:?}");
        c.expect("RCPT TO:<ok@example.com>", 250);
        c.expect("QUIT", 221);
    }
}
