//! The queue over time: a temporary failure retried on schedule, the
//! operator commands (`sluice queue list|show|hold|release|retry|delete`)
//! on a live gateway, and a kill -9 in the middle of delivering a load.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::delivery_kit::{
    Gateway, Sink, SinkOptions, bounces, deliveries, listed, lo, maildir, message, queue_cli,
    queue_json, queue_ok, send, wait_delivery, wait_done, wait_for, wait_queue_empty,
};
use crate::dnsd::{DnsServer, Zone};
use crate::harness::{Reply, Sandbox, Server, SmtpConn, dot_stuff};

/// How long one delivery to a sink on loopback may take.
const DELIVERED: Duration = Duration::from_secs(15);

/// The `timestamp` of a JSON log record.
fn logged_at(record: &Value) -> DateTime<Utc> {
    record["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {record}"))
}

/// A time field of a queued recipient.
fn time_field(rcpt: &Value, name: &str) -> DateTime<Utc> {
    rcpt[name]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {rcpt}"))
}

/// The spool envelope of `id`, if it is still queued.
fn spooled(sb: &Sandbox, id: &str) -> Option<Value> {
    let path = sb.spool().queue_dir().join(format!("{id}.json"));
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[test]
fn temporary_failure_is_retried_and_delivered() {
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2))]);
    let sink = &sinks[0];
    let dns = DnsServer::start(
        Zone::new()
            .mx("retry.test", 10, "mx.retry.test")
            .a("mx.retry.test", lo(2)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).retry("2s", "1m").start(&sb);
    let id = send(
        server.addr(0),
        "s@origin.example",
        &["once1@retry.test"],
        &message("retried", "retry-1"),
    );

    let first = wait_delivery(&server, &id, "deferred", DELIVERED);
    assert_eq!(first["status"], "4.2.0", "{first}");
    assert_eq!(first["remote"], "mx.retry.test", "{first}");
    // Between the attempts the state is on disk.
    let env = wait_for(Duration::from_secs(2), || {
        spooled(&sb, &id).filter(|e| e["recipients"][0]["state"] == "deferred")
    })
    .unwrap_or_else(|| {
        panic!(
            "no deferred state in the spool for {id}; log:\n{}",
            server.log_text()
        )
    });
    let r = &env["recipients"][0];
    assert_eq!(r["attempts"], 1, "{env}");
    assert_eq!(r["status"], "4.2.0", "{env}");
    assert!(
        r["diagnostic"].to_string().contains("not this time"),
        "the sink's reply is kept: {env}"
    );
    let wait = time_field(r, "next_attempt") - time_field(r, "last_attempt");
    assert!(
        (1500..=2500).contains(&wait.num_milliseconds()),
        "next attempt retry_initial (2 s) after the first: {env}"
    );

    wait_delivery(&server, &id, "delivered", DELIVERED);
    let done = wait_done(&server, &id, DELIVERED);
    assert_eq!(done["delivered"], 1, "{done}");
    let attempts = deliveries(&server, &id);
    let results: Vec<&Value> = attempts.iter().map(|d| &d["fields"]["result"]).collect();
    assert_eq!(results, ["deferred", "delivered"], "two attempts");
    let gap = logged_at(&attempts[1]) - logged_at(&attempts[0]);
    assert!(
        gap.num_milliseconds() >= 1500,
        "the retry waited for retry_initial: {gap}"
    );
    assert!(
        spooled(&sb, &id).is_none(),
        "a delivered message leaves the spool"
    );
    assert!(sb.spool().ids().is_empty());
    let got = sink.messages();
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(got[0].rcpt_tos(), ["once1@retry.test"]);
    assert_eq!(
        sink.events()
            .iter()
            .filter(|e| e.starts_with("rcpt once1@retry.test"))
            .map(|e| e.rsplit(' ').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>(),
        ["451", "250"],
        "the sink saw a refusal, then an acceptance"
    );
}

#[test]
fn operator_commands_on_a_live_gateway() {
    let (port, _sinks) = Sink::start_shared(&[SinkOptions::on(lo(2))]);
    let dns = DnsServer::start(
        Zone::new()
            .mx("dfr.test", 10, "mx.dfr.test")
            .a("mx.dfr.test", lo(2)),
    );
    let sb = Sandbox::new();
    // Attempts at 0, +2 s, +6 s, ... unless held.
    let server = Gateway::new(dns.addr(), port).retry("2s", "1m").start(&sb);
    let id = send(
        server.addr(0),
        "alice@example.com",
        &["defer1@dfr.test"],
        &message("queue ops", "ops-1"),
    );
    wait_delivery(&server, &id, "deferred", DELIVERED);
    let attempts = |server: &Server| deliveries(server, &id).len();

    // list and show, text and JSON.
    let text = queue_ok(&sb, &["list"]);
    assert!(
        text.contains(&id) && text.contains("defer1@dfr.test") && text.contains("deferred"),
        "queue list:\n{text}"
    );
    let m = listed(&sb, &id).expect("listed");
    let r = &m["recipients"][0];
    assert_eq!(r["state"], "deferred", "{m}");
    assert_eq!(r["status"], "4.2.0", "{m}");
    assert_eq!(r["attempts"], 1, "{m}");
    assert!(
        r["diagnostic"].to_string().contains("try again later"),
        "{m}"
    );
    assert_eq!(m["held"], false, "{m}");
    let text = queue_ok(&sb, &["show", &id]);
    assert!(
        text.contains(&id)
            && text.contains("alice@example.com")
            && text.contains("defer1@dfr.test")
            && text.contains("Subject: queue ops"),
        "queue show:\n{text}"
    );
    let shown = queue_json(&sb, &["show", &id]);
    assert_eq!(shown["envelope"]["id"], id.as_str(), "{shown}");
    assert!(
        shown["headers"].to_string().contains("X-Test-Id: ops-1"),
        "{shown}"
    );

    // hold: no attempt for more than two retry periods.
    queue_ok(&sb, &["hold", &id]);
    let before = attempts(&server);
    let m = listed(&sb, &id).expect("listed while held");
    assert_eq!(m["held"], true, "{m}");
    let text = queue_ok(&sb, &["list"]);
    assert!(
        text.contains(&format!("{id}!")),
        "held is marked in the list:\n{text}"
    );
    thread::sleep(Duration::from_secs(5));
    assert_eq!(
        attempts(&server),
        before,
        "a held message is not tried; log:\n{}",
        server.log_text()
    );
    assert_eq!(
        listed(&sb, &id).expect("still queued")["recipients"][0]["attempts"],
        before
    );

    // release: tried again at once.
    queue_ok(&sb, &["release", &id]);
    wait_for(Duration::from_secs(3), || {
        (attempts(&server) > before).then_some(())
    })
    .unwrap_or_else(|| panic!("no attempt after release; log:\n{}", server.log_text()));
    let m = wait_for(Duration::from_secs(3), || {
        listed(&sb, &id).filter(|m| m["recipients"][0]["attempts"] == before + 1)
    })
    .expect("the attempt after release is recorded");
    assert_eq!(m["held"], false, "{m}");
    let next = time_field(&m["recipients"][0], "next_attempt");

    // retry: tried now, well before next_attempt.
    let text = queue_ok(&sb, &["retry", &id]);
    assert!(text.contains("1 message"), "queue retry:\n{text}");
    let third = wait_for(Duration::from_secs(3), || {
        deliveries(&server, &id).get(before + 1).cloned()
    })
    .unwrap_or_else(|| panic!("no attempt after retry; log:\n{}", server.log_text()));
    assert!(
        logged_at(&third) < next,
        "retry ran at {} although the next attempt was due at {next}",
        logged_at(&third)
    );

    // delete: gone, no DSN.
    queue_ok(&sb, &["delete", &id]);
    assert!(
        !sb.spool().queue_files().iter().any(|f| f.starts_with(&id)),
        "deleted message files remain: {:?}",
        sb.spool().queue_files()
    );
    assert!(listed(&sb, &id).is_none(), "deleted message still listed");
    let (ok, _, err) = queue_cli(&sb, &["show", &id]);
    assert!(
        !ok && err.contains("no message"),
        "show after delete: {err}"
    );
    let (ok, _, err) = queue_cli(&sb, &["hold", "NOSUCHID"]);
    assert!(
        !ok && err.contains("no message"),
        "hold of an unknown id: {err}"
    );
    assert!(
        server
            .wait_log("deleted by operator", Duration::from_secs(2), |v| {
                v["fields"]["queue_id"] == id.as_str()
            })
            .is_some()
    );
    let text = queue_ok(&sb, &["retry", "--all"]);
    assert!(text.contains("0 message"), "nothing left to retry:\n{text}");
    thread::sleep(Duration::from_millis(500));
    assert!(
        bounces(&server, &id).is_empty(),
        "no DSN for a deleted message"
    );
    assert!(
        maildir(&sb, "alice@example.com").is_empty(),
        "no DSN arrived"
    );
    assert_eq!(
        queue_ok(&sb, &["list"]).trim(),
        "queue is empty",
        "the queue is empty"
    );
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// The CPU time (user and system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces:
    // count from after it. Skipping the state (field 3), utime and stime
    // (fields 14 and 15) are at indices 10 and 11.
    let after = stat.rfind(')').map_or(stat.as_str(), |i| &stat[i + 1..]);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields[10] + fields[11];
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

#[test]
fn a_deferred_message_waits_idle_for_its_retry() {
    // Nothing listens on the MX: every attempt is refused (4.4.1).
    let port = crate::delivery_kit::shared_port();
    let dns = DnsServer::start(
        Zone::new()
            .mx("dead.test", 10, "mx.dead.test")
            .a("mx.dead.test", lo(2)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).retry("30s", "1m").start(&sb);
    let id = send(
        server.addr(0),
        "s@origin.example",
        &["u@dead.test"],
        &message("waiting", "idle-1"),
    );
    let f = wait_delivery(&server, &id, "deferred", DELIVERED);
    assert_eq!(f["status"], "4.4.1", "{f}");

    // Until its retry in 30 s there is nothing to do.
    thread::sleep(Duration::from_millis(500));
    let window = Duration::from_secs(3);
    let before = cpu_time(server.pid());
    thread::sleep(window);
    let used = cpu_time(server.pid()) - before;
    assert!(
        used < Duration::from_millis(300),
        "the gateway used {used:?} of CPU in {window:?} with one deferred message waiting \
         30 s for its retry (and nothing else to do): the queue keeps re-processing it"
    );
    assert_eq!(deliveries(&server, &id).len(), 1, "no early attempt");
    assert_eq!(
        listed(&sb, &id).expect("still queued")["recipients"][0]["attempts"],
        1
    );
}

#[test]
fn max_lifetime_expires_a_deferred_message_with_a_dsn() {
    let (port, _sinks) = Sink::start_shared(&[SinkOptions::on(lo(2))]);
    let dns = DnsServer::start(
        Zone::new()
            .mx("dfr.test", 10, "mx.dfr.test")
            .a("mx.dfr.test", lo(2)),
    );
    let sb = Sandbox::new();
    let mut gw = Gateway::new(dns.addr(), port).retry("1s", "1s");
    gw.max_lifetime = "2s".into();
    let server = gw.start(&sb);
    let id = send(
        server.addr(0),
        "alice@example.com",
        &["defer1@dfr.test"],
        &message("expiring", "expire-1"),
    );
    let done = wait_done(&server, &id, DELIVERED);
    assert_eq!(done["failed"], 1, "{done}");
    let tries = deliveries(&server, &id);
    assert!(
        tries.len() >= 2 && tries.iter().all(|d| d["fields"]["result"] == "deferred"),
        "retried until it expired: {tries:?}"
    );
    let files = crate::delivery_kit::wait_maildir(&sb, "alice@example.com", 1, DELIVERED, &server);
    let d = crate::delivery_kit::parse_delivered_dsn(&files[0], "alice@example.com");
    d.assert_failure_report("delivery-status");
    let r = d.only_recipient();
    assert_eq!(r["final-recipient"], "rfc822;defer1@dfr.test", "{r}");
    assert_eq!(r["status"], "4.4.7", "delivery time expired: {r}");
    assert!(
        r["diagnostic-code"].to_string().contains("try again later"),
        "the last error is reported: {r}"
    );
    assert_eq!(d.original_subject(), Some("expiring"));
}

/// One transaction that reports I/O errors instead of panicking.
fn try_transaction(c: &mut SmtpConn, from: &str, to: &str, body: &[u8]) -> io::Result<Reply> {
    let timeout = Duration::from_secs(10);
    for line in [
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
        "DATA".into(),
    ] {
        c.send(format!("{line}\r\n").as_bytes())?;
        let r = c.read_reply(timeout)?;
        if r.code >= 400 {
            return Ok(r);
        }
    }
    let mut wire = dot_stuff(body);
    wire.extend_from_slice(b".\r\n");
    c.send(&wire)?;
    c.read_reply(timeout)
}

/// A sender thread: `count` messages over one connection; returns the
/// test ids that got a 250, stopping at the first error.
fn sender(addr: SocketAddr, thread_no: usize, count: usize) -> Vec<String> {
    let mut accepted = Vec::new();
    let Ok(mut c) = SmtpConn::connect(addr) else {
        return accepted;
    };
    let greeted = c
        .read_reply(Duration::from_secs(10))
        .and_then(|_| c.send(b"EHLO load.example\r\n"))
        .and_then(|()| c.read_reply(Duration::from_secs(10)));
    if greeted.is_err() {
        return accepted;
    }
    for n in 0..count {
        let test_id = format!("crash-{thread_no:02}-{n:03}");
        let body = message("crash load", &test_id);
        match try_transaction(&mut c, "load@origin.example", "u@load.test", &body) {
            Ok(r) if r.code == 250 => accepted.push(test_id),
            _ => break,
        }
    }
    accepted
}

#[test]
fn kill_9_while_delivering_loses_nothing() {
    const SENDERS: usize = 10;
    const PER_SENDER: usize = 20;
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2)).delay(0.05)]);
    let sink = &sinks[0];
    let dns = DnsServer::start(
        Zone::new()
            .mx("load.test", 10, "mx.load.test")
            .a("mx.load.test", lo(2)),
    );
    let sb = Sandbox::new();
    let mut server = Gateway::new(dns.addr(), port).start(&sb);
    let addr = server.addr(0);

    let threads: Vec<_> = (0..SENDERS)
        .map(|t| thread::spawn(move || sender(addr, t, PER_SENDER)))
        .collect();
    // Kill once deliveries are well under way.
    let started = wait_for(Duration::from_secs(30), || {
        (sink.count() >= 30).then_some(())
    });
    server.kill9();
    let at_kill = sink.count();
    assert!(
        started.is_some(),
        "deliveries did not get going (sink has {at_kill}); log:\n{}",
        server.log_text()
    );
    let accepted: BTreeSet<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a sender thread panicked"))
        .collect();
    assert!(
        at_kill < accepted.len(),
        "everything accepted ({}) was delivered ({at_kill}) before the kill: no crash during delivery",
        accepted.len()
    );

    let server = sb.restart(1);
    assert!(
        server
            .wait_log(
                "queue loaded from the spool",
                Duration::from_secs(5),
                |_| true
            )
            .is_some(),
        "the restarted gateway picks up the queue; log:\n{}",
        server.log_text()
    );
    wait_queue_empty(&sb, Duration::from_secs(60), &server);

    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for m in sink.messages() {
        let test_id = m
            .header("X-Test-Id")
            .unwrap_or_else(|| panic!("a message without X-Test-Id at the sink:\n{}", m.text()));
        *copies.entry(test_id).or_default() += 1;
    }
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|t| !copies.contains_key(*t))
        .collect();
    let duplicates: Vec<(&String, &usize)> = copies.iter().filter(|(_, n)| **n > 1).collect();
    let unknown: Vec<&String> = copies.keys().filter(|t| !t.starts_with("crash-")).collect();
    println!(
        "kill -9 with {at_kill} delivered: {} accepted, {} delivered after restart, {} duplicate(s) {duplicates:?}",
        accepted.len(),
        copies.values().sum::<usize>(),
        duplicates.len()
    );
    assert!(
        lost.is_empty(),
        "{} message(s) that got a 250 were never delivered: {lost:?}",
        lost.len()
    );
    assert!(unknown.is_empty(), "messages nobody sent: {unknown:?}");
}

/// Most deliveries the sink had in progress at once, from its event log.
fn most_in_flight(events: &[String]) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for e in events {
        if e.starts_with("data-start") {
            now += 1;
            most = most.max(now);
        } else if e.starts_with("data-end") {
            now = now.saturating_sub(1);
        }
    }
    most
}

/// `[limits] max_message_memory` bounds the message octets the queue holds
/// too: with room for one 700 KiB message, deliveries to a slow sink go one
/// at a time (with the default, several at once), and every message
/// arrives.
#[test]
fn the_queue_holds_messages_within_its_memory_budget() {
    for (budget, one_at_a_time) in [("\"1MiB\"", true), ("\"1GiB\"", false)] {
        let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2)).delay(0.4)]);
        let sink = &sinks[0];
        let dns = DnsServer::start(
            Zone::new()
                .mx("big.test", 10, "mx.big.test")
                .a("mx.big.test", lo(2)),
        );
        let sb = Sandbox::new();
        let server = Gateway::new(dns.addr(), port)
            .limit("max_message_memory", budget)
            .start(&sb);
        let mut body = b"Subject: big\r\n\r\n".to_vec();
        while body.len() < 700 << 10 {
            body.extend_from_slice(
                b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n",
            );
        }
        let mut c = SmtpConn::ehlo(server.addr(0), "client.example");
        for _ in 0..5 {
            let r = c.send_mail("a@origin.example", &["u@big.test"], &body);
            assert!(r.queue_id().is_some(), "{r:?}");
        }
        c.expect("QUIT", 221);
        sink.wait_messages(5, Duration::from_secs(60), &server);
        wait_queue_empty(&sb, Duration::from_secs(30), &server);
        let most = most_in_flight(&sink.events());
        assert_eq!(
            most == 1,
            one_at_a_time,
            "max_message_memory = {budget}: {most} deliveries at once; events {:?}",
            sink.events()
        );
        assert_eq!(sink.count(), 5, "every message delivered once");
    }
}
