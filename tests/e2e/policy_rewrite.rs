//! A data-stage policy that rewrites recipients and headers: the rewrite is
//! stored with the message, so it survives a crash before delivery and is
//! what gets delivered after the restart.

use std::time::{Duration, Instant};

use crate::guests;
use crate::harness::{Sandbox, SmtpConn};

fn config(sb: &Sandbox, deliver: bool) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com", "example.test"]

[[listener]]
address = "127.0.0.1:0"

[queue]
deliver = {deliver}

[[policy]]
name = "basic"
path = "{wasm}"
"#,
        data = sb.data_dir().display(),
        wasm = guests::guest_wasm("basic").display(),
    )
}

fn maildir_files(sb: &Sandbox, domain: &str, user: &str) -> Vec<std::path::PathBuf> {
    let dir = sb
        .data_dir()
        .join("mail")
        .join(domain)
        .join(user)
        .join("new");
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn recipient_rewrite_survives_a_crash_before_delivery() {
    let sb = Sandbox::new();
    let mut server = sb.start_toml(&config(&sb, false), 1);
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    c.expect("MAIL FROM:<sender@example.com>", 250);
    c.expect("RCPT TO:<keep@example.com>", 250);
    c.expect("RCPT TO:<removed@example.test>", 250);
    c.expect("DATA", 354);
    let r = c.cmd("Subject: please add-rcpt\r\nX-Remove-Me: yes\r\n\r\nbody\r\n.");
    let id = r
        .queue_id()
        .unwrap_or_else(|| panic!("message not queued: {r:?}"));
    c.expect("QUIT", 221);

    // What is on disk already carries the policy's changes.
    let stored = sb.spool().read(&id);
    assert_eq!(
        stored.recipients(),
        ["keep@example.com", "added@example.test"],
        "envelope after the data-stage rewrite"
    );
    let text = String::from_utf8_lossy(stored.body()).into_owned();
    assert!(text.contains("X-Policy: basic\r\n"), "{text}");
    assert!(!text.contains("X-Remove-Me"), "{text}");

    // Crash, then start again with delivery on: the rewritten envelope is
    // what is delivered.
    server.kill9();
    drop(server);
    let server = sb.start_toml(&config(&sb, true), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !sb.spool().ids().is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        sb.spool().ids().is_empty(),
        "message still queued after restart; log:\n{}",
        server.log_text()
    );
    assert_eq!(maildir_files(&sb, "example.com", "keep").len(), 1);
    assert_eq!(maildir_files(&sb, "example.test", "added").len(), 1);
    assert!(maildir_files(&sb, "example.test", "removed").is_empty());
    let delivered = std::fs::read_to_string(&maildir_files(&sb, "example.test", "added")[0])
        .expect("read delivered message");
    assert!(delivered.contains("X-Policy: basic\r\n"));
    assert!(!delivered.contains("X-Remove-Me"));
}

#[test]
fn quarantined_mail_expires_after_quarantine_lifetime() {
    let sb = Sandbox::new();
    let toml = config(&sb, true).replace(
        "[queue]\ndeliver = true",
        "[queue]\ndeliver = true\nquarantine_lifetime = \"2s\"",
    );
    let server = sb.start_toml(&toml, 1);
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    c.expect("MAIL FROM:<sender@example.com>", 250);
    c.expect("RCPT TO:<keep@example.com>", 250);
    c.expect("DATA", 354);
    let r = c.cmd("Subject: please quarantine\r\n\r\nbody\r\n.");
    let id = r
        .queue_id()
        .unwrap_or_else(|| panic!("message not queued: {r:?}"));
    c.expect("QUIT", 221);
    assert_eq!(
        sb.spool().ids(),
        std::slice::from_ref(&id),
        "held in quarantine"
    );
    let gone = server.wait_log(
        "quarantine expired: message deleted",
        Duration::from_secs(15),
        |v| v["fields"]["queue_id"] == id.as_str(),
    );
    assert!(gone.is_some(), "log:\n{}", server.log_text());
    assert!(
        sb.spool().ids().is_empty(),
        "the quarantined message is gone"
    );
    assert!(
        maildir_files(&sb, "example.com", "keep").is_empty(),
        "and was never delivered"
    );
}
