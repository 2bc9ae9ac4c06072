//! Failures and their reports: DNS answers that bounce or defer, a 5xx from
//! the next hop, the DSN parameters (NOTIFY, RET, ENVID, ORCPT), LMTP, a
//! next hop without SMTPUTF8, and mail loops. Every DSN is parsed with
//! Python's `email` package as RFC 3464 says a reader would.

use std::time::Duration;

use crate::delivery_kit::{
    Dsn, Gateway, Sink, SinkOptions, bounces, deliveries, free_port_on_localhost, listed, lo,
    maildir, message, parse_delivered_dsn, send, send_raw, wait_delivery, wait_done, wait_maildir,
};
use crate::dnsd::{DnsServer, Zone};
use crate::harness::{Sandbox, Server, crlf};

/// How long a delivery or bounce on loopback may take.
const DELIVERED: Duration = Duration::from_secs(15);
/// The local sender that gets the DSNs.
const ALICE: &str = "alice@example.com";

/// The DSNs in Alice's Maildir, parsed, after waiting for `n` of them.
fn alice_dsns(sb: &Sandbox, n: usize, server: &Server) -> Vec<Dsn> {
    wait_maildir(sb, ALICE, n, DELIVERED, server)
        .iter()
        .map(|f| parse_delivered_dsn(f, ALICE))
        .collect()
}

/// The DSN among `dsns` about the message with this Subject.
fn about<'a>(dsns: &'a [Dsn], subject: &str) -> &'a Dsn {
    dsns.iter()
        .find(|d| d.original_subject() == Some(subject))
        .unwrap_or_else(|| {
            let seen: Vec<Option<&str>> = dsns.iter().map(Dsn::original_subject).collect();
            panic!("no DSN about {subject:?}; the DSNs are about {seen:?}")
        })
}

/// Check one recipient block: Final-Recipient, Action failed and Status.
fn assert_failed(dsn: &Dsn, rcpt: &str, status: &str) -> serde_json::Value {
    let r = dsn.only_recipient();
    let kind = if rcpt.is_ascii() { "rfc822" } else { "utf-8" };
    assert_eq!(
        r["final-recipient"],
        format!("{kind};{rcpt}"),
        "Final-Recipient:\n{}",
        dsn.raw
    );
    assert_eq!(r["action"], "failed", "Action:\n{}", dsn.raw);
    assert_eq!(r["status"], status, "Status:\n{}", dsn.raw);
    r
}

#[test]
fn dns_null_mx_and_nxdomain_bounce_servfail_defers() {
    let dns = DnsServer::start(
        Zone::new()
            .null_mx("nullmx.test")
            .nxdomain("nx.test")
            .servfail("sf.test"),
    );
    let sb = Sandbox::new();
    // Long retries: the SERVFAIL message is tried once during the test.
    let server = Gateway::new(dns.addr(), 25).retry("1m", "1m").start(&sb);
    let addr = server.addr(0);
    let null = send(
        addr,
        ALICE,
        &["u@nullmx.test"],
        &message("to null mx", "dns-1"),
    );
    let nx = send(
        addr,
        ALICE,
        &["u@nx.test"],
        &message("to nxdomain", "dns-2"),
    );
    let sf = send(
        addr,
        ALICE,
        &["u@sf.test"],
        &message("to servfail", "dns-3"),
    );

    let dsns = alice_dsns(&sb, 2, &server);
    let d = about(&dsns, "to null mx");
    d.assert_failure_report("delivery-status");
    let r = assert_failed(d, "u@nullmx.test", "5.1.10");
    assert!(
        r["diagnostic-code"].to_string().contains("null MX"),
        "Diagnostic-Code names the null MX: {r}"
    );
    let d = about(&dsns, "to nxdomain");
    d.assert_failure_report("delivery-status");
    assert_failed(d, "u@nx.test", "5.1.2");
    for id in [&null, &nx] {
        assert_eq!(bounces(&server, id).len(), 1, "one bounce for {id}");
    }

    let f = wait_delivery(&server, &sf, "deferred", DELIVERED);
    assert!(
        f["status"].as_str().is_some_and(|s| s.starts_with("4.")),
        "SERVFAIL is temporary: {f}"
    );
    let m = listed(&sb, &sf).expect("the SERVFAIL message stays queued");
    let r = &m["recipients"][0];
    assert_eq!(r["state"], "deferred", "{m}");
    assert!(
        r["status"].as_str().is_some_and(|s| s.starts_with("4.")),
        "a 4.x.x status in the queue: {m}"
    );
    assert!(
        r["next_attempt"].is_string(),
        "a next attempt is planned: {m}"
    );
    assert!(bounces(&server, &sf).is_empty(), "no DSN for a deferral");
    assert_eq!(maildir(&sb, ALICE).len(), 2, "only the two bounces arrived");
}

#[test]
fn permanent_failure_dsn_and_the_dsn_parameters() {
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2))]);
    let sink = &sinks[0];
    let dns = DnsServer::start(
        Zone::new()
            .mx("remote.test", 10, "mx.remote.test")
            .a("mx.remote.test", lo(2)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    let addr = server.addr(0);

    // One recipient refused, one accepted: the DSN names only the first.
    let plain = send(
        addr,
        ALICE,
        &["reject1@remote.test", "ok1@remote.test"],
        &message("dsn plain", "dsn-1"),
    );
    // NOTIFY=NEVER: no report.
    let never = send_raw(
        addr,
        &format!("MAIL FROM:<{ALICE}>"),
        &["RCPT TO:<reject2@remote.test> NOTIFY=NEVER"],
        &message("dsn never", "dsn-2"),
    );
    // RET=FULL, ENVID and ORCPT: the whole message back, both echoed.
    let full_body = message("dsn full", "dsn-3");
    let full = send_raw(
        addr,
        &format!("MAIL FROM:<{ALICE}> RET=FULL ENVID=env-3.full"),
        &["RCPT TO:<reject3@remote.test> NOTIFY=FAILURE ORCPT=rfc822;orig3@remote.test"],
        &full_body,
    );
    // The null sender: never a bounce of a bounce.
    let null = send_raw(
        addr,
        "MAIL FROM:<>",
        &["RCPT TO:<reject4@remote.test>"],
        &message("dsn null sender", "dsn-4"),
    );

    for id in [&plain, &never, &full, &null] {
        wait_done(&server, id, DELIVERED);
    }
    let dsns = alice_dsns(&sb, 2, &server);

    let d = about(&dsns, "dsn plain");
    d.assert_failure_report("delivery-status");
    assert_eq!(
        d.parts()[2],
        "text/rfc822-headers",
        "headers only by default"
    );
    assert!(d.header("to").contains(ALICE), "DSN To: {}", d.header("to"));
    let r = assert_failed(d, "reject1@remote.test", "5.1.1");
    let diag = r["diagnostic-code"].as_str().unwrap_or_default();
    assert!(
        diag.starts_with("smtp;") && diag.contains("550") && diag.contains("no such user here"),
        "Diagnostic-Code carries the sink's reply: {r}"
    );
    assert_eq!(r["remote-mta"], "dns; mx.remote.test", "{r}");
    assert!(r.get("original-recipient").is_none(), "no ORCPT given: {r}");
    assert!(
        d.per_message("original-envelope-id").is_none(),
        "no ENVID given"
    );
    let delivered = sink.messages();
    assert_eq!(delivered.len(), 1, "only ok1 is delivered");
    assert_eq!(delivered[0].rcpt_tos(), ["ok1@remote.test"]);

    let d = about(&dsns, "dsn full");
    d.assert_failure_report("delivery-status");
    assert_eq!(
        d.parts()[2],
        "message/rfc822",
        "RET=FULL returns the message"
    );
    let r = assert_failed(d, "reject3@remote.test", "5.1.1");
    assert_eq!(r["original-recipient"], "rfc822;orig3@remote.test", "{r}");
    assert_eq!(
        d.per_message("original-envelope-id"),
        Some("env-3.full"),
        "ENVID is echoed"
    );
    let returned = &d.json["returned_message"];
    assert_eq!(returned["headers"]["x-test-id"], "dsn-3", "{returned}");
    assert!(
        d.raw
            .contains(&String::from_utf8_lossy(&full_body).into_owned()),
        "the whole original (header and body) is in the DSN:\n{}",
        d.raw
    );

    for (id, why) in [(&never, "NOTIFY=NEVER"), (&null, "the null sender")] {
        assert!(bounces(&server, id).is_empty(), "no DSN for {why}");
        let f = deliveries(&server, id);
        assert_eq!(f.len(), 1, "one attempt for {why}");
        assert_eq!(f[0]["fields"]["result"], "failed", "{why}: {}", f[0]);
    }
    assert_eq!(bounces(&server, &plain).len(), 1);
    assert_eq!(bounces(&server, &full).len(), 1);
    // Everything is done: nothing more can arrive.
    crate::delivery_kit::wait_queue_empty(&sb, DELIVERED, &server);
    assert_eq!(maildir(&sb, ALICE).len(), 2, "exactly two DSNs");
}

#[test]
fn lmtp_delivers_locally_and_a_refusal_bounces_through_lmtp() {
    let lmtp = Sink::start(SinkOptions::on(lo(1)).lmtp());
    let dns = DnsServer::start(Zone::new());
    let sb = Sandbox::new();
    let mut gw = Gateway::new(dns.addr(), 25);
    gw.lmtp = Some(lmtp.addr().to_string());
    let server = gw.start(&sb);
    let body = message("over lmtp", "lmtp-1");
    let id = send(
        server.addr(0),
        ALICE,
        &["bob@example.com", "reject1@example.com"],
        &body,
    );
    let done = wait_done(&server, &id, DELIVERED);
    assert_eq!(done["delivered"], 1, "{done}");
    assert_eq!(done["failed"], 1, "{done}");
    let ok = wait_delivery(&server, &id, "delivered", DELIVERED);
    assert_eq!(ok["rcpt"], "bob@example.com", "{ok}");
    let bad = wait_delivery(&server, &id, "failed", DELIVERED);
    assert_eq!(bad["rcpt"], "reject1@example.com", "{bad}");
    assert_eq!(bad["status"], "5.1.1", "{bad}");

    // The DSN goes to Alice, a local address: through LMTP as well.
    let got = lmtp.wait_messages(2, DELIVERED, &server);
    assert_eq!(got.len(), 2, "the message and the DSN");
    let original = got
        .iter()
        .find(|m| m.mail_from() == ALICE)
        .expect("the original at the LMTP server");
    assert_eq!(original.rcpt_tos(), ["bob@example.com"]);
    assert!(
        original.eml.ends_with(&body),
        "the message as sent, behind our trace"
    );
    let bounce = got
        .iter()
        .find(|m| m.mail_from().is_empty())
        .expect("a DSN from <> at the LMTP server");
    assert_eq!(
        bounce.rcpt_tos(),
        [ALICE],
        "the DSN is addressed to the sender"
    );
    let d = Dsn::parse(&bounce.eml);
    d.assert_failure_report("delivery-status");
    let r = assert_failed(&d, "reject1@example.com", "5.1.1");
    assert!(
        r["diagnostic-code"]
            .to_string()
            .contains("no such user here"),
        "{r}"
    );
    assert_eq!(d.original_subject(), Some("over lmtp"));
    assert!(
        !sb.data_dir().join("mail").exists(),
        "with LMTP nothing is written to Maildirs"
    );
}

#[test]
fn smtputf8_to_a_server_without_it_bounces_5_6_7() {
    let (port, sinks) = Sink::start_shared(&[SinkOptions::on(lo(2)).no_smtputf8()]);
    let dns = DnsServer::start(
        Zone::new()
            .mx("utf8.test", 10, "mx.utf8.test")
            .a("mx.utf8.test", lo(2)),
    );
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), port).start(&sb);
    let body = crlf(
        "From: Alice <alice@example.com>\nTo: \u{fc}ser@utf8.test\nSubject: utf8 bounce\n\n\
         Gr\u{fc}\u{df}e\n",
    );
    let id = send_raw(
        server.addr(0),
        &format!("MAIL FROM:<{ALICE}> SMTPUTF8 BODY=8BITMIME"),
        &["RCPT TO:<\u{fc}ser@utf8.test>"],
        &body,
    );
    let f = wait_delivery(&server, &id, "failed", DELIVERED);
    assert_eq!(f["status"], "5.6.7", "{f}");
    let dsns = alice_dsns(&sb, 1, &server);
    let d = &dsns[0];
    // A UTF-8 address makes it an RFC 6533 report.
    d.assert_failure_report("global-delivery-status");
    assert_eq!(d.parts()[2], "message/global-headers", "{:?}", d.parts());
    let r = assert_failed(d, "\u{fc}ser@utf8.test", "5.6.7");
    assert_eq!(
        r["final-recipient"], "utf-8;\u{fc}ser@utf8.test",
        "RFC 6533 address type: {r}"
    );
    assert!(
        r["diagnostic-code"].to_string().contains("SMTPUTF8"),
        "the reason names SMTPUTF8: {r}"
    );
    assert_eq!(d.original_subject(), Some("utf8 bounce"));
    assert_eq!(sinks[0].count(), 0, "nothing reached the server");
    assert!(
        sinks[0].events().is_empty(),
        "not even a RCPT was tried: {:?}",
        sinks[0].events()
    );
}

#[test]
fn mail_loops_bounce_5_4_6() {
    // The gateway listens on a port known in advance, and MX delivery goes
    // to that port: an MX on 127.0.0.1 is the gateway itself.
    let port = free_port_on_localhost();
    let dns = DnsServer::start(
        Zone::new()
            .mx("self.test", 10, "mx.self.test")
            .a("mx.self.test", lo(1))
            .mx("far.test", 10, "mx.far.test")
            .a("mx.far.test", lo(2)),
    );
    let sb = Sandbox::new();
    let mut gw = Gateway::new(dns.addr(), port);
    gw.listen = format!("127.0.0.1:{port}").parse().expect("an address");
    let server = gw.start(&sb);
    assert_eq!(server.addr(0).port(), port);

    // 60 Received: fields (61 with ours): more than max_received_headers.
    let mut many = String::new();
    for i in 0..60 {
        many.push_str(&format!(
            "Received: from hop{i}.example by hop{}.example; Mon, 1 Jan 2024 00:00:{:02} +0000\n",
            i + 1,
            i % 60
        ));
    }
    many.push_str("Subject: looping\n\nround and round\n");
    // A message that looped elsewhere is refused while its client waits:
    // no DSN to a sender who may be forged (no backscatter).
    let mut c = crate::harness::SmtpConn::ehlo(server.addr(0), "client.example");
    let refused = c.send_mail(ALICE, &["u@far.test"], &crlf(&many));
    assert!(refused.is("554 5.4.6"), "a looping message: {refused:?}");
    assert!(refused.last().contains("Received"), "{refused:?}");
    c.expect("QUIT", 221);
    // A loop through our own MX is found at delivery: 5.4.6 in a DSN.
    let to_self = send(
        server.addr(0),
        ALICE,
        &["u@self.test"],
        &message("to myself", "loop-2"),
    );

    let dsns = alice_dsns(&sb, 1, &server);
    assert!(
        dsns.iter().all(|d| d.original_subject() != Some("looping")),
        "no DSN for the refused message"
    );
    let d = about(&dsns, "to myself");
    d.assert_failure_report("delivery-status");
    let r = assert_failed(d, "u@self.test", "5.4.6");
    assert!(r["diagnostic-code"].to_string().contains("loop"), "{r}");
    for f in deliveries(&server, &to_self) {
        assert_eq!(f["fields"]["result"], "failed", "{f}");
    }
    let accepted = server.log_records("transaction");
    assert_eq!(
        accepted.len(),
        2,
        "our two transactions came in over SMTP (nothing looped back): {accepted:?}"
    );
}

#[test]
fn notify_success_for_local_delivery_reports_delivered() {
    let dns = DnsServer::start(Zone::new());
    let sb = Sandbox::new();
    let server = Gateway::new(dns.addr(), 25).start(&sb);
    let asked = send_raw(
        server.addr(0),
        &format!("MAIL FROM:<{ALICE}> ENVID=ok-1"),
        &["RCPT TO:<carol@example.com> NOTIFY=SUCCESS,FAILURE"],
        &message("success wanted", "success-1"),
    );
    let silent = send_raw(
        server.addr(0),
        &format!("MAIL FROM:<{ALICE}>"),
        &["RCPT TO:<dave@example.com> NOTIFY=FAILURE"],
        &message("no report wanted", "success-2"),
    );
    for id in [&asked, &silent] {
        wait_done(&server, id, DELIVERED);
    }
    assert_eq!(maildir(&sb, "carol@example.com").len(), 1);
    assert_eq!(maildir(&sb, "dave@example.com").len(), 1);
    crate::delivery_kit::wait_queue_empty(&sb, DELIVERED, &server);
    let dsns = alice_dsns(&sb, 1, &server);
    assert_eq!(
        dsns.len(),
        1,
        "one report: NOTIFY=FAILURE asks for none on success"
    );
    let d = about(&dsns, "success wanted");
    assert_eq!(d.json["report_type"], "delivery-status", "{}", d.raw);
    assert_eq!(d.parts()[2], "text/rfc822-headers", "{:?}", d.parts());
    assert_eq!(d.per_message("original-envelope-id"), Some("ok-1"));
    let r = d.only_recipient();
    assert_eq!(r["final-recipient"], "rfc822;carol@example.com", "{r}");
    assert_eq!(r["action"], "delivered", "{r}");
    assert_eq!(r["status"], "2.0.0", "{r}");
}
