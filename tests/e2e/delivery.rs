//! Delivery, end to end: the real gateway delivers to real aiosmtpd sinks
//! found through a real DNS server, and into Maildirs. What arrives must be
//! byte for byte what was accepted, behind exactly one new `Received:`;
//! each recipient must go where its domain says; MX preference, fallback
//! and the implicit MX must hold; and a slow destination must not hold up
//! the others.

use std::time::{Duration, Instant};

use crate::delivery_kit::{
    Gateway, Sink, SinkMessage, SinkOptions, deliveries, lo, maildir, send, send_raw,
    split_first_field, wait_delivery, wait_done, wait_for,
};
use crate::dnsd::{DnsServer, Zone};
use crate::harness::{Sandbox, assert_bytes_eq, crlf, queued_id_in, run_swaks};

/// How long one delivery to a sink on loopback may take.
const DELIVERED: Duration = Duration::from_secs(15);

/// A message that is easy to damage: a trace field of its own, a folded
/// field, trailing white space, 8-bit text, lines that need dot-stuffing
/// (one is a lone dot), a 990-octet line and an empty line before the end.
fn tricky_message() -> Vec<u8> {
    let long: String = "0123456789".repeat(99);
    let mut m = crlf(
        "Received: from earlier.example by relay.example; Mon, 1 Jan 2024 00:00:00 +0000\n\
         From: Alice <alice@origin.example>\n\
         To: a@bytes.test, b@bytes.test\n\
         Subject: byte-exact delivery\n\
         Message-ID: <bytes-1@origin.example>\n\
         X-Trailing-Space: value   \n\
         X-Folded: first part\n\
         \tsecond part\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         H\u{e9}llo w\u{f6}rld, 8-bit text.\n\
         .a line with a leading dot\n\
         ..two dots\n\
         .\n\
         \x20. space dot\n\
         trailing tab\t\n",
    );
    m.extend_from_slice(long.as_bytes());
    m.extend_from_slice(b"\r\n\r\nlast line\r\n");
    m
}

/// Check a delivered copy: our one `Received:` field, then exactly `body`.
fn assert_one_trace_then(got: &[u8], body: &[u8], what: &str) {
    let (trace, rest) = split_first_field(got);
    let trace = String::from_utf8_lossy(trace);
    assert!(
        trace.starts_with("Received: from client.example") && trace.contains("by gw.sluice.test"),
        "{what}: the first field is our Received:, got {trace:?}"
    );
    assert_bytes_eq(rest, body, what);
}

#[test]
fn delivered_byte_exact_behind_one_received_field() {
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2))]);
    let dns = DnsServer::start(
        Zone::new()
            .mx("bytes.test", 10, "mx.bytes.test")
            .a("mx.bytes.test", lo(2)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    let addr = server.addr(0);

    // Raw SMTP, two recipients of one domain, 8-bit body.
    let body = tricky_message();
    let id = send_raw(
        addr,
        "MAIL FROM:<sender@origin.example> BODY=8BITMIME",
        &["RCPT TO:<a@bytes.test>", "RCPT TO:<b@bytes.test>"],
        &body,
    );
    let done = wait_done(&server, &id, DELIVERED);
    assert_eq!(done["delivered"], 2, "{done}");
    let got = sinks[0].wait_messages(1, DELIVERED, &server);
    assert_eq!(got.len(), 1, "one transaction for both recipients");
    let m = &got[0];
    assert_one_trace_then(&m.eml, &body, "raw SMTP message at the sink");
    assert_eq!(m.mail_from(), "sender@origin.example", "{}", m.meta);
    assert_eq!(m.rcpt_tos(), ["a@bytes.test", "b@bytes.test"], "{}", m.meta);
    assert!(
        m.meta["mail_options"].to_string().contains("BODY=8BITMIME"),
        "8-bit content is sent with BODY=8BITMIME: {}",
        m.meta
    );
    for d in deliveries(&server, &id) {
        assert_eq!(d["fields"]["result"], "delivered", "{d}");
        assert_eq!(d["fields"]["remote"], "mx.bytes.test", "{d}");
    }
    assert!(
        sb.spool().ids().is_empty(),
        "a delivered message leaves the spool"
    );

    // swaks, an independent client.
    let text = "From: Bob <bob@origin.example>\nTo: c@bytes.test\nSubject: swaks\n\n\
                line one\n.dot line\nlast";
    let file = sb.write("swaks.eml", text.as_bytes());
    let out = run_swaks(
        addr,
        &[
            "--from",
            "bob@origin.example",
            "--to",
            "c@bytes.test",
            "--helo",
            "client.example",
            "--data",
            &format!("@{}", file.display()),
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    let id = queued_id_in(&transcript).expect("queue id in the swaks transcript");
    wait_done(&server, &id, DELIVERED);
    let got = sinks[0].wait_messages(2, DELIVERED, &server);
    let m = &got[1];
    let mut want = crlf(text);
    want.extend_from_slice(b"\r\n");
    assert_one_trace_then(&m.eml, &want, "swaks message at the sink");
    assert_eq!(m.mail_from(), "bob@origin.example");
    assert_eq!(m.rcpt_tos(), ["c@bytes.test"]);
}

/// The sink message whose recipients are exactly `rcpts`.
fn by_rcpts<'a>(msgs: &'a [SinkMessage], rcpts: &[&str]) -> &'a SinkMessage {
    msgs.iter()
        .find(|m| m.rcpt_tos() == rcpts)
        .unwrap_or_else(|| {
            let seen: Vec<Vec<String>> = msgs.iter().map(SinkMessage::rcpt_tos).collect();
            panic!("no message for {rcpts:?}; the sink has {seen:?}")
        })
}

#[test]
fn recipients_go_to_maildir_or_their_mx() {
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2)), SinkOptions::on(lo(3))]);
    let dns = DnsServer::start(
        Zone::new()
            .mx("one.test", 10, "mx.one.test")
            .a("mx.one.test", lo(2))
            .mx("two.test", 10, "mx.two.test")
            .a("mx.two.test", lo(3)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    let body = crlf("From: sender@origin.example\nSubject: four ways\n\nhello\n");
    let id = send(
        server.addr(0),
        "sender@origin.example",
        &[
            "carol@example.com",
            "dave@one.test",
            "erin@two.test",
            "Gina@Example.COM",
            "frank@one.test",
        ],
        &body,
    );
    let done = wait_done(&server, &id, DELIVERED);
    assert_eq!(done["delivered"], 5, "{done}");
    assert_eq!(done["failed"], 0, "{done}");

    let one = sinks[0].messages();
    let two = sinks[1].messages();
    assert_eq!(one.len(), 1, "one.test gets one transaction");
    assert_eq!(two.len(), 1, "two.test gets one transaction");
    let at_one = by_rcpts(&one, &["dave@one.test", "frank@one.test"]);
    by_rcpts(&two, &["erin@two.test"]);
    assert_eq!(at_one.mail_from(), "sender@origin.example");
    assert_one_trace_then(&at_one.eml, &body, "message at the MX of one.test");
    assert_eq!(two[0].eml, at_one.eml, "both MX hosts get the same octets");

    // The local copies: Return-Path and Delivered-To, then the stored
    // message (the same octets the MX hosts got).
    for (rcpt, mailbox) in [
        ("carol@example.com", "carol@example.com"),
        ("Gina@Example.COM", "gina@example.com"),
    ] {
        let files = maildir(&sb, mailbox);
        assert_eq!(files.len(), 1, "Maildir of {mailbox}");
        let mut want = format!("Return-Path: <sender@origin.example>\r\nDelivered-To: {rcpt}\r\n")
            .into_bytes();
        want.extend_from_slice(&at_one.eml);
        assert_bytes_eq(&files[0], &want, &format!("Maildir copy for {rcpt}"));
    }
    for d in deliveries(&server, &id) {
        let f = &d["fields"];
        let rcpt = f["rcpt"].as_str().unwrap_or_default();
        let want = match rcpt.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()) {
            Some(d) if d == "example.com" => "local",
            Some(d) if d == "one.test" => "mx.one.test",
            Some(d) if d == "two.test" => "mx.two.test",
            _ => panic!("unexpected delivery record {d}"),
        };
        assert_eq!(f["result"], "delivered", "{d}");
        assert_eq!(f["remote"], want, "{d}");
    }
}

#[test]
fn relay_host_takes_every_non_local_recipient() {
    // 127.0.0.2 is what DNS names as the MX of one.test; 127.0.0.3 is the
    // relay. With relay_host set, DNS must not matter.
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2)), SinkOptions::on(lo(3))]);
    let (mx_sink, relay) = (&sinks[0], &sinks[1]);
    let dns = DnsServer::start(
        Zone::new()
            .mx("one.test", 10, "mx.one.test")
            .a("mx.one.test", lo(2))
            .nxdomain("nowhere.test"),
    );
    let sb = Sandbox::new();
    let mut gw = Gateway::new(dns.addr(), port);
    gw.relay_host = Some(relay.addr().to_string());
    let server = gw.start(&sb);
    let body = crlf("From: sender@origin.example\nSubject: via the relay\n\nhello\n");
    let id = send(
        server.addr(0),
        "sender@origin.example",
        &["dave@one.test", "carol@example.com", "erin@nowhere.test"],
        &body,
    );
    let done = wait_done(&server, &id, DELIVERED);
    assert_eq!(done["delivered"], 3, "{done}");

    let got = relay.messages();
    assert_eq!(got.len(), 1, "one transaction to the relay");
    assert_eq!(got[0].rcpt_tos(), ["dave@one.test", "erin@nowhere.test"]);
    assert_eq!(got[0].mail_from(), "sender@origin.example");
    assert_one_trace_then(&got[0].eml, &body, "message at the relay");
    assert_eq!(mx_sink.count(), 0, "the MX named by DNS gets nothing");
    let local = maildir(&sb, "carol@example.com");
    assert_eq!(
        local.len(),
        1,
        "the local recipient still gets a Maildir copy"
    );
    assert!(
        local[0].ends_with(&body),
        "Maildir copy ends with the message"
    );
    for d in deliveries(&server, &id) {
        let f = &d["fields"];
        let want = if f["rcpt"] == "carol@example.com" {
            "local".to_string()
        } else {
            relay.addr().ip().to_string()
        };
        assert_eq!(f["remote"], want.as_str(), "{d}");
    }
}

#[test]
fn mx_preference_fallback_implicit_mx_and_equal_preferences() {
    // 127.0.0.4 and 127.0.0.9 have nothing listening on the port: refused.
    let (port, sinks) = Sink::start_shared(&[
        SinkOptions::on(lo(5)),
        SinkOptions::on(lo(6)),
        SinkOptions::on(lo(7)),
        SinkOptions::on(lo(8)),
        SinkOptions::on(lo(10)),
        SinkOptions::on(lo(11)),
    ]);
    let [live, implicit, eq1, eq2, multi, best] = &sinks[..] else {
        unreachable!("six sinks")
    };
    let dns = DnsServer::start(
        Zone::new()
            .mx("pref.test", 20, "live.pref.test")
            .mx("pref.test", 10, "dead.pref.test")
            .a("dead.pref.test", lo(4))
            .a("live.pref.test", lo(5))
            .a("implicit.test", lo(6))
            .mx("eq.test", 10, "e1.eq.test")
            .mx("eq.test", 10, "e2.eq.test")
            .a("e1.eq.test", lo(7))
            .a("e2.eq.test", lo(8))
            .mx("multi.test", 10, "mx.multi.test")
            .a("mx.multi.test", lo(9))
            .a("mx.multi.test", lo(10))
            .mx("order.test", 30, "live.pref.test")
            .mx("order.test", 5, "best.order.test")
            .mx("order.test", 20, "implicit.test")
            .a("best.order.test", lo(11)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    let addr = server.addr(0);
    let body = |n: usize| crlf(&format!("Subject: mx {n}\nX-Test-Id: mx-{n}\n\nhello\n"));

    let pref = send(addr, "s@origin.example", &["u@pref.test"], &body(0));
    let imp = send(addr, "s@origin.example", &["u@implicit.test"], &body(1));
    let mul = send(addr, "s@origin.example", &["u@multi.test"], &body(2));
    let mut eq_ids = Vec::new();
    for n in 0..16 {
        eq_ids.push(send(
            addr,
            "s@origin.example",
            &["u@eq.test"],
            &body(10 + n),
        ));
    }
    // Every host of order.test works: the best preference always wins.
    let order_ids: Vec<String> = (0..4)
        .map(|n| send(addr, "s@origin.example", &["u@order.test"], &body(40 + n)))
        .collect();

    let d = wait_delivery(&server, &pref, "delivered", DELIVERED);
    assert_eq!(
        d["remote"], "live.pref.test",
        "MX 10 refuses: MX 20 takes it: {d}"
    );
    assert_eq!(live.wait_messages(1, DELIVERED, &server).len(), 1);
    let d = wait_delivery(&server, &imp, "delivered", DELIVERED);
    assert_eq!(
        d["remote"], "implicit.test",
        "no MX: the domain's own address: {d}"
    );
    assert_eq!(implicit.wait_messages(1, DELIVERED, &server).len(), 1);
    let d = wait_delivery(&server, &mul, "delivered", DELIVERED);
    assert_eq!(d["remote"], "mx.multi.test", "{d}");
    assert_eq!(multi.wait_messages(1, DELIVERED, &server).len(), 1);
    for id in &eq_ids {
        wait_done(&server, id, DELIVERED);
    }
    let (n1, n2) = (eq1.count(), eq2.count());
    assert_eq!(n1 + n2, 16, "every equal-preference message delivered once");
    assert!(
        n1 > 0 && n2 > 0,
        "two MX hosts of equal preference share the load (got {n1} and {n2} of 16)"
    );
    for id in &order_ids {
        let d = wait_delivery(&server, id, "delivered", DELIVERED);
        assert_eq!(
            d["remote"], "best.order.test",
            "the lowest preference first: {d}"
        );
    }
    assert_eq!(best.wait_messages(4, DELIVERED, &server).len(), 4);
    for id in [&pref, &imp, &mul] {
        assert_eq!(deliveries(&server, id).len(), 1, "one attempt for {id}");
    }
}

#[test]
fn slow_destination_does_not_hold_up_the_others() {
    const SLOW: f64 = 8.0;
    let (port, sinks) = Sink::start_shared(&[
        SinkOptions::on(lo(2)),
        SinkOptions::on(lo(3)),
        SinkOptions::on(lo(4)).delay(SLOW),
    ]);
    let [fast1, fast2, slow] = &sinks[..] else {
        unreachable!("three sinks")
    };
    let dns = DnsServer::start(
        Zone::new()
            .mx("fast1.test", 10, "mx.fast1.test")
            .a("mx.fast1.test", lo(2))
            .mx("fast2.test", 10, "mx.fast2.test")
            .a("mx.fast2.test", lo(3))
            .mx("slow.test", 10, "mx.slow.test")
            .a("mx.slow.test", lo(4)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    let addr = server.addr(0);
    let body = |n: usize| {
        crlf(&format!(
            "Subject: slow {n}\nX-Test-Id: slow-{n}\n\nhello\n"
        ))
    };

    // The slow destination first, then the fast ones, then all three in
    // one message.
    let started = Instant::now();
    let slow_only = send(addr, "s@origin.example", &["u@slow.test"], &body(0));
    send(addr, "s@origin.example", &["u@fast1.test"], &body(1));
    send(addr, "s@origin.example", &["u@fast2.test"], &body(2));
    let mixed = send(
        addr,
        "s@origin.example",
        &["v@slow.test", "v@fast1.test", "v@fast2.test"],
        &body(3),
    );

    let fast_done = wait_for(Duration::from_secs(6), || {
        (fast1.count() == 2 && fast2.count() == 2).then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "the fast domains did not get their 2 messages each within 6 s \
             (fast1 {}, fast2 {}); log:\n{}",
            fast1.count(),
            fast2.count(),
            server.log_text()
        )
    });
    let stored_slow = slow.count();
    let elapsed = fast_done - started;
    assert_eq!(
        stored_slow, 0,
        "the slow sink answered before the fast domains were done ({elapsed:?}): \
         the check is meaningless"
    );
    assert!(
        elapsed < Duration::from_secs_f64(SLOW - 2.0),
        "fast deliveries took {elapsed:?}: held up by the slow destination?"
    );
    // Both slow transactions are in progress at once.
    let in_progress = wait_for(Duration::from_secs(3), || {
        let n = slow
            .events()
            .iter()
            .filter(|e| e.starts_with("data-start"))
            .count();
        (n == 2).then_some(n)
    });
    assert!(
        in_progress.is_some(),
        "the slow sink should be receiving both messages by now; events: {:?}",
        slow.events()
    );
    let late = Duration::from_secs_f64(SLOW) + DELIVERED;
    slow.wait_messages(2, late, &server);
    wait_done(&server, &slow_only, late);
    let done = wait_done(&server, &mixed, late);
    assert_eq!(done["delivered"], 3, "{done}");
}
