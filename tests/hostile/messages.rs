//! Hostile messages: a header bomb with a data-stage policy loaded, and a
//! looping message — refused at the end of DATA, never accepted and
//! bounced later (no backscatter).

use std::time::{Duration, Instant};

use crate::guests;
use crate::harness::{Sandbox, SmtpConn, crlf};

fn config(sb: &Sandbox) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com", "example.test"]

[[listener]]
address = "127.0.0.1:0"

[queue]
deliver = false

[[policy]]
name = "basic"
path = "{wasm}"
"#,
        data = sb.data_dir().display(),
        wasm = guests::guest_wasm("basic").display(),
    )
}

/// The gateway's peak resident memory so far, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// 2.6 million empty header fields (`a:` lines, 10 MiB) to a gateway whose
/// policy reads every message: refused `552 5.3.4` by the header bounds
/// before any policy parses it, while another client's transactions go on.
#[test]
fn a_header_bomb_is_refused_before_the_policies() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&config(&sb), 1);
    let addr = server.addr(0);
    let before = peak_rss_kib(server.pid());
    let mut bomb = b"Subject: bomb\r\n".to_vec();
    while bomb.len() < 10 << 20 {
        bomb.extend_from_slice(b"a:\r\n");
    }
    bomb.extend_from_slice(b"\r\nbody\r\n");
    let sender = std::thread::spawn(move || {
        let mut c = SmtpConn::ehlo(addr, "bomber.example");
        let t = Instant::now();
        let r = c.send_mail("a@elsewhere.example", &["user@example.com"], &bomb);
        (r, t.elapsed())
    });
    // Another client meanwhile.
    let mut times = Vec::new();
    let body = crlf("Subject: normal\n\nhello\n");
    for _ in 0..10 {
        let t = Instant::now();
        let mut c = SmtpConn::ehlo(addr, "good.example");
        let r = c.send_mail("b@elsewhere.example", &["user@example.com"], &body);
        assert!(r.queue_id().is_some(), "the other client: {r:?}");
        c.expect("QUIT", 221);
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (r, took) = sender.join().expect("the bomber");
    let peak = peak_rss_kib(server.pid());
    eprintln!(
        "header bomb: {r:?} after {took:?}; other client max {:?}; peak RSS {} -> {} KiB",
        times.iter().max(),
        before,
        peak
    );
    assert!(r.is("552 5.3.4"), "the bomb: {r:?}\n{}", server.log_text());
    assert_eq!(
        sb.spool().ids().len(),
        10,
        "only the other client's messages are kept"
    );
}

/// A message that already passed 50 relays (93 `Received:` fields): today
/// refused at the end of DATA with `554 5.4.6`; it used to get a 250 and
/// then a DSN to its (possibly forged) sender.
#[test]
fn a_looping_message_is_refused_not_bounced() {
    let sb = Sandbox::new();
    let server = sb.start_toml(&config(&sb), 1);
    let mut msg = String::new();
    for i in 0..93 {
        msg.push_str(&format!(
            "Received: from hop{i}.example by hop{}.example; Mon, 7 Dec 2026 06:00:00 +0000\n",
            i + 1
        ));
    }
    msg.push_str("Subject: loop\n\nround and round\n");
    let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
    let r = c.send_mail(
        "victim@elsewhere.example",
        &["user@example.com"],
        &crlf(&msg),
    );
    assert!(r.is("554 5.4.6"), "a looping message: {r:?}");
    c.expect("QUIT", 221);
    assert!(sb.spool().ids().is_empty(), "nothing kept, no DSN queued");
}

/// The memory budget for messages in flight: while one client holds more
/// than it (a message arriving, not yet ended), a new message gets
/// `452 4.3.1`; once that message is in, new messages are taken again.
/// Nothing is lost.
#[test]
fn new_messages_wait_while_the_memory_budget_is_spent() {
    let sb = Sandbox::new();
    let toml = format!(
        r#"data_dir = "{data}"
hostname = "mx.test.example"
local_domains = ["example.com"]

[[listener]]
address = "127.0.0.1:0"

[limits]
max_message_memory = "1MiB"

[queue]
deliver = false
"#,
        data = sb.data_dir().display()
    );
    let server = sb.start_toml(&toml, 1);
    let addr = server.addr(0);
    let mut big = SmtpConn::ehlo(addr, "big.example");
    big.expect("MAIL FROM:<a@elsewhere.example>", 250);
    big.expect("RCPT TO:<user@example.com>", 250);
    big.expect("DATA", 354);
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n";
    let mut part = b"Subject: big\r\n\r\n".to_vec();
    while part.len() < 16 << 20 {
        part.extend_from_slice(line);
    }
    // Written whole: the gateway has read all but what the loopback socket
    // buffers hold (a few MiB at most), far more than the budget.
    big.write(&part);
    let mut other = SmtpConn::ehlo(addr, "other.example");
    other.expect("MAIL FROM:<b@elsewhere.example>", 250);
    other.expect("RCPT TO:<user@example.com>", 250);
    let r = other.cmd("DATA");
    assert!(
        r.is("452 4.3.1"),
        "a new message while the budget is spent: {r:?}"
    );
    // The big one ends and is kept; then the other gets in.
    let done = big.cmd(".");
    assert!(done.queue_id().is_some(), "{done:?}");
    other.expect("RSET", 250);
    let r = other.send_mail(
        "b@elsewhere.example",
        &["user@example.com"],
        &crlf("Subject: later\n\nhello\n"),
    );
    assert!(r.queue_id().is_some(), "after the budget freed: {r:?}");
    assert_eq!(sb.spool().ids().len(), 2);
}
