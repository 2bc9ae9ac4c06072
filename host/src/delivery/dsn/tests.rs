//! Unit tests of `dsn`.

use super::*;
use crate::smtp::command::MailParams;
use crate::spool::{ClientInfo, RcptState};
use chrono::TimeZone;
use mail_parser::{MessageParser, MimeHeaders, PartType};

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, h, m, 0).unwrap()
}

fn rcpt(addr: &str) -> Recipient {
    let mut r = Recipient::new(addr.to_string());
    r.state = RcptState::Failed;
    r.attempts = 1;
    r.last_attempt = Some(t(10, 5));
    r.status = Some("5.1.1".into());
    r.diagnostic = Some("smtp; 550 5.1.1 <bob@example.net>: no such user".into());
    r.remote_mta = Some("mx1.example.net".into());
    r
}

fn env(sender: &str, recipients: Vec<Recipient>) -> Envelope {
    Envelope::new(
        "01J8Z3ABCDEF".into(),
        t(10, 0),
        sender.into(),
        recipients,
        MailParams::default(),
        false,
        ClientInfo {
            ip: "192.0.2.7".into(),
            port: 40000,
            listener: "0.0.0.0:25".into(),
            helo: "client.example.org".into(),
            esmtp: true,
            tls: None,
            proxy: None,
        },
    )
}

const ORIGINAL: &[u8] = b"Received: from client.example.org ([192.0.2.7])\r\n\tby mx.example.com with ESMTP id 01J8Z3ABCDEF;\r\n\tSat, 14 Mar 2026 10:00:00 +0000\r\n\
From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: Lunch on Friday\r\nMessage-ID: <lunch-1@example.org>\r\n\r\n\
Hi Bob,\r\n\r\nlunch on Friday?\r\nSECRET-BODY-LINE\r\n";

const MTA: &str = "mx.example.com";

fn notify(success: bool, failure: bool, delay: bool) -> Option<Notify> {
    Some(Notify {
        success,
        failure,
        delay,
    })
}

/// Every line ends in CRLF, no bare CR or LF, none over 998 octets.
fn check_lines(msg: &[u8]) {
    let mut i = 0;
    let mut line_start = 0;
    while i < msg.len() {
        match msg[i] {
            b'\r' => {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
                assert!(i - line_start <= MAX_LINE, "line at {line_start} too long");
                i += 2;
                line_start = i;
            }
            b'\n' => panic!("bare LF at {i}"),
            _ => i += 1,
        }
    }
    assert_eq!(line_start, msg.len(), "last line has no CRLF");
}

/// The header-like blocks of a delivery-status body, unfolded, as
/// (lower-case name, value) lists.
fn blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for block in body.split("\r\n\r\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for l in block.split("\r\n") {
            if l.is_empty() {
                continue;
            }
            if l.starts_with([' ', '\t']) {
                let last = fields.last_mut().expect("continuation first");
                last.1.push_str(l);
            } else {
                let (n, v) = l.split_once(':').expect("field without colon");
                fields.push((n.to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if !fields.is_empty() {
            out.push(fields);
        }
    }
    out
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

struct Parsed {
    top_type: String,
    report_type: Option<String>,
    types: Vec<String>,
    text: String,
    status: String,
    third: Vec<u8>,
    nested_subject: Option<String>,
}

fn parse(dsn: &Dsn) -> Parsed {
    check_lines(&dsn.message);
    let m = MessageParser::default()
        .parse(&dsn.message)
        .expect("DSN parses");
    let ct = m.content_type().expect("content type");
    let top_type = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
    let report_type = ct.attribute("report-type").map(str::to_string);
    let root = m.root_part();
    let ids = root.sub_parts().expect("multipart").to_vec();
    assert_eq!(ids.len(), 3, "three parts");
    let parts: Vec<_> = ids.iter().map(|&i| &m.parts[i as usize]).collect();
    let types = parts
        .iter()
        .map(|p| {
            let ct = p.content_type().expect("part content type");
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    let text = parts[0].text_contents().expect("text part").to_string();
    let status = String::from_utf8(parts[1].contents().to_vec()).expect("utf-8 status");
    let (third, nested_subject) = match &parts[2].body {
        PartType::Message(nested) => (
            nested.raw_message().to_vec(),
            nested.subject().map(str::to_string),
        ),
        _ => (parts[2].contents().to_vec(), None),
    };
    Parsed {
        top_type,
        report_type,
        types,
        text,
        status,
        third,
        nested_subject,
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr::memmem::find(hay, needle.as_bytes()).is_some()
}

#[test]
fn failure_structure_and_fields() {
    let mut r2 = rcpt("carol@example.net");
    r2.orcpt = Some("rfc822;carol@old.example.net".into());
    r2.status = None;
    r2.diagnostic = Some("connect to mx.example.net[203.0.113.9]:25: Connection refused".into());
    r2.remote_mta = None;
    r2.last_attempt = None;
    let mut e = env(
        "alice@example.org",
        vec![rcpt("bob@example.net"), r2, rcpt("dave@example.net")],
    );
    e.params.envid = Some("QQ314159".into());
    let dsn = build(&e, ORIGINAL, &[0, 1], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    assert_eq!(dsn.to, "alice@example.org");
    assert!(!dsn.is_8bit());
    let head = String::from_utf8(header_section(&dsn.message).to_vec()).unwrap();
    for want in [
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n",
        "To: <alice@example.org>\r\n",
        "Subject: Undelivered Mail Returned to Sender\r\n",
        "Date: Sat, 14 Mar 2026 11:00:00 +0000\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "MIME-Version: 1.0\r\n",
    ] {
        assert!(head.contains(want), "missing {want:?} in\n{head}");
    }
    let parsed = MessageParser::default().parse(&dsn.message).unwrap();
    let mid = parsed.message_id().expect("Message-ID");
    assert!(mid.ends_with(".01J8Z3ABCDEF@mx.example.com"), "{mid}");
    assert!(head.contains(&format!("Message-ID: <{mid}>\r\n")));

    let p = parse(&dsn);
    assert_eq!(p.top_type, "multipart/report");
    assert_eq!(p.report_type.as_deref(), Some("delivery-status"));
    assert_eq!(
        p.types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    assert!(p.text.contains("<bob@example.net>"));
    assert!(p.text.contains("host mx1.example.net said: 550 5.1.1"));
    assert!(p.text.contains("Connection refused"));
    assert!(!p.text.contains("dave@"));

    let b = blocks(&p.status);
    assert_eq!(b.len(), 3, "per-message + 2 recipients: {b:?}");
    assert_eq!(field(&b[0], "reporting-mta"), Some("dns; mx.example.com"));
    assert_eq!(field(&b[0], "original-envelope-id"), Some("QQ314159"));
    assert_eq!(
        field(&b[0], "arrival-date"),
        Some("Sat, 14 Mar 2026 10:00:00 +0000")
    );
    let bob = &b[1];
    assert_eq!(
        field(bob, "final-recipient"),
        Some("rfc822;bob@example.net")
    );
    assert_eq!(field(bob, "original-recipient"), None);
    assert_eq!(field(bob, "action"), Some("failed"));
    assert_eq!(field(bob, "status"), Some("5.1.1"));
    assert_eq!(field(bob, "remote-mta"), Some("dns; mx1.example.net"));
    assert_eq!(
        field(bob, "diagnostic-code"),
        Some("smtp; 550 5.1.1 <bob@example.net>: no such user")
    );
    assert_eq!(
        field(bob, "last-attempt-date"),
        Some("Sat, 14 Mar 2026 10:05:00 +0000")
    );
    let carol = &b[2];
    assert_eq!(
        field(carol, "original-recipient"),
        Some("rfc822;carol@old.example.net")
    );
    assert_eq!(
        field(carol, "final-recipient"),
        Some("rfc822;carol@example.net")
    );
    assert_eq!(field(carol, "status"), Some("5.0.0"));
    assert_eq!(field(carol, "remote-mta"), None);
    assert_eq!(field(carol, "last-attempt-date"), None);
    assert_eq!(
        field(carol, "diagnostic-code"),
        Some("X-Sluice; connect to mx.example.net[203.0.113.9]:25: Connection refused")
    );

    // RET absent: headers only, our Received: included, no body.
    assert!(contains(&p.third, "Subject: Lunch on Friday"));
    assert!(contains(&p.third, "Received: from client.example.org"));
    assert!(!contains(&p.third, "SECRET-BODY-LINE"));
    assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
}

#[test]
fn ret_full_returns_whole_message() {
    let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    e.params.ret = Some(Ret::Full);
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let p = parse(&dsn);
    assert_eq!(p.types[2], "message/rfc822");
    assert_eq!(p.nested_subject.as_deref(), Some("Lunch on Friday"));
    assert!(contains(&p.third, "SECRET-BODY-LINE"));
    assert!(contains(&p.third, "Message-ID: <lunch-1@example.org>"));
}

#[test]
fn ret_hdrs_returns_headers() {
    let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    e.params.ret = Some(Ret::Hdrs);
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let p = parse(&dsn);
    assert_eq!(p.types[2], "text/rfc822-headers");
    assert_eq!(p.third, header_section(ORIGINAL));
    assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
}

#[test]
fn ret_full_only_for_failures() {
    let mut r = rcpt("bob@example.net");
    r.notify = notify(true, true, true);
    let mut e = env("alice@example.org", vec![r]);
    e.params.ret = Some(Ret::Full);
    for kind in [DsnKind::Delay, DsnKind::Success] {
        let dsn = build(&e, ORIGINAL, &[0], kind, MTA, t(11, 0)).unwrap();
        let p = parse(&dsn);
        assert_eq!(p.types[2], "text/rfc822-headers", "{kind:?}");
        assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
    }
}

#[test]
fn null_sender_never_bounced() {
    let e = env("", vec![rcpt("bob@example.net")]);
    for kind in [DsnKind::Failure, DsnKind::Delay, DsnKind::Success] {
        assert!(build(&e, ORIGINAL, &[0], kind, MTA, t(11, 0)).is_none());
    }
    let e = env("<>", vec![rcpt("bob@example.net")]);
    assert!(build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).is_none());
}

#[test]
fn notify_never_gives_none() {
    let mut r = rcpt("bob@example.net");
    r.notify = notify(false, false, false);
    let e = env("alice@example.org", vec![r]);
    for kind in [DsnKind::Failure, DsnKind::Delay, DsnKind::Success] {
        assert!(build(&e, ORIGINAL, &[0], kind, MTA, t(11, 0)).is_none());
    }
}

#[test]
fn notify_success_only() {
    let mut r = rcpt("bob@example.net");
    r.notify = notify(true, false, false);
    r.status = Some("2.0.0".into());
    r.diagnostic = Some("smtp; 250 2.0.0 Ok: queued as 4F2".into());
    r.state = RcptState::Delivered;
    let e = env("alice@example.org", vec![r]);
    assert!(build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).is_none());
    assert!(build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).is_none());
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Success, MTA, t(11, 0)).unwrap();
    let head = String::from_utf8(header_section(&dsn.message).to_vec()).unwrap();
    assert!(head.contains("Subject: Successful Mail Delivery Report\r\n"));
    let p = parse(&dsn);
    let b = blocks(&p.status);
    assert_eq!(field(&b[1], "action"), Some("delivered"));
    assert_eq!(field(&b[1], "status"), Some("2.0.0"));
}

#[test]
fn default_notify() {
    let e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    assert!(build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).is_some());
    assert!(build(&e, ORIGINAL, &[0], DsnKind::Success, MTA, t(11, 0)).is_none());
    let mut e = e;
    e.recipients[0].status = Some("4.4.1".into());
    e.recipients[0].diagnostic = Some("smtp; 421 4.4.1 try later".into());
    e.recipients[0].next_attempt = Some(t(12, 0));
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).unwrap();
    let head = String::from_utf8(header_section(&dsn.message).to_vec()).unwrap();
    assert!(head.contains("Subject: Delayed Mail (still being retried)\r\n"));
    let p = parse(&dsn);
    let b = blocks(&p.status);
    assert_eq!(field(&b[1], "action"), Some("delayed"));
    assert_eq!(field(&b[1], "status"), Some("4.4.1"));
    assert_eq!(
        field(&b[1], "diagnostic-code"),
        Some("smtp; 421 4.4.1 try later")
    );
    assert!(p.text.contains("WARNING ONLY"));
    assert!(
        p.text
            .contains("Next attempt: Sat, 14 Mar 2026 12:00:00 +0000")
    );
}

#[test]
fn mixed_notify_reports_only_those_asking() {
    let mut never = rcpt("never@example.net");
    never.notify = notify(false, false, false);
    let e = env(
        "alice@example.org",
        vec![never, rcpt("bob@example.net"), rcpt("x@example.net")],
    );
    // Out-of-range and repeated indices are ignored.
    let dsn = build(
        &e,
        ORIGINAL,
        &[0, 1, 1, 99],
        DsnKind::Failure,
        MTA,
        t(11, 0),
    )
    .unwrap();
    let p = parse(&dsn);
    let b = blocks(&p.status);
    assert_eq!(b.len(), 2);
    assert_eq!(
        field(&b[1], "final-recipient"),
        Some("rfc822;bob@example.net")
    );
    assert!(build(&e, ORIGINAL, &[], DsnKind::Failure, MTA, t(11, 0)).is_none());
    assert!(build(&e, ORIGINAL, &[7], DsnKind::Failure, MTA, t(11, 0)).is_none());
}

#[test]
fn status_must_fit_the_kind() {
    let mut r = rcpt("bob@example.net");
    r.status = Some("5.1.1".into());
    r.notify = notify(true, true, true);
    let e = env("alice@example.org", vec![r]);
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).unwrap();
    assert_eq!(
        field(&blocks(&parse(&dsn).status)[1], "status"),
        Some("4.0.0")
    );
    let mut e = e;
    e.recipients[0].status = Some("garbage".into());
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    assert_eq!(
        field(&blocks(&parse(&dsn).status)[1], "status"),
        Some("5.0.0")
    );
    e.recipients[0].status = Some("4.4.7".into());
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    assert_eq!(
        field(&blocks(&parse(&dsn).status)[1], "status"),
        Some("4.4.7")
    );
}

#[test]
fn diagnostic_not_doubled_and_single_line() {
    for (stored, want) in [
        (
            "smtp; 550 5.1.1 no such user",
            "smtp; 550 5.1.1 no such user",
        ),
        (
            "SMTP;550 5.1.1 no such user",
            "smtp; 550 5.1.1 no such user",
        ),
        (
            "smtp; smtp; 550 5.1.1 no such user",
            "smtp; 550 5.1.1 no such user",
        ),
        ("550 5.1.1 no such user", "smtp; 550 5.1.1 no such user"),
        (
            "smtp; 550-5.1.1 first\r\n550 5.1.1 second",
            "smtp; 550-5.1.1 first 550 5.1.1 second",
        ),
        ("x-unix; disk full", "x-unix; disk full"),
        ("timed out; no answer", "X-Sluice; timed out; no answer"),
    ] {
        let mut r = rcpt("bob@example.net");
        r.diagnostic = Some(stored.into());
        let e = env("alice@example.org", vec![r]);
        let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
        assert!(!contains(&dsn.message, "smtp; smtp;"), "{stored}");
        let p = parse(&dsn);
        assert_eq!(
            field(&blocks(&p.status)[1], "diagnostic-code"),
            Some(want),
            "{stored}"
        );
    }
    let mut r = rcpt("bob@example.net");
    r.diagnostic = Some(" \r\n ".into());
    let e = env("alice@example.org", vec![r]);
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    assert_eq!(
        field(&blocks(&parse(&dsn).status)[1], "diagnostic-code"),
        None
    );
}

#[test]
fn long_values_are_folded() {
    let mut r = rcpt("bob@example.net");
    let long_word = "x".repeat(3000);
    r.diagnostic = Some(format!(
        "smtp; 550 5.7.1 {} {long_word} end",
        "blocked because of policy ".repeat(60)
    ));
    let mut e = env("alice@example.org", vec![r]);
    e.params.ret = Some(Ret::Full);
    let mut original = ORIGINAL.to_vec();
    original.extend_from_slice(&[b'y'; 5000]);
    original.extend_from_slice(b"\r\n");
    let dsn = build(&e, &original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let p = parse(&dsn);
    let diag = field(&blocks(&p.status)[1], "diagnostic-code")
        .unwrap()
        .to_string();
    assert!(diag.starts_with("smtp; 550 5.7.1 blocked because"));
    assert!(diag.ends_with(" end"));
    // The overlong body line was broken, nothing was lost.
    let ys = |m: &[u8]| m.iter().filter(|&&b| b == b'y').count();
    assert_eq!(ys(&p.third), ys(&original));
    assert!(p.third.len() > original.len());
}

#[test]
fn utf8_uses_global_types() {
    let mut r = rcpt("josé@exemple.fr");
    r.orcpt = Some("utf-8;josé@exemple.fr".into());
    let mut e = env("renée@exemple.fr", vec![r]);
    e.params.smtputf8 = true;
    let original = "Received: by mx.example.com; Sat, 14 Mar 2026 10:00:00 +0000\r\n\
From: Renée <renée@exemple.fr>\r\nSubject: Café\r\n\r\nBonjour\r\n"
        .as_bytes();
    let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    assert!(dsn.is_8bit());
    let p = parse(&dsn);
    assert_eq!(p.report_type.as_deref(), Some("global-delivery-status"));
    assert_eq!(p.types[1], "message/global-delivery-status");
    assert_eq!(p.types[2], "message/global-headers");
    let b = blocks(&p.status);
    assert_eq!(
        field(&b[1], "final-recipient"),
        Some("utf-8;josé@exemple.fr")
    );
    assert_eq!(
        field(&b[1], "original-recipient"),
        Some("utf-8;josé@exemple.fr")
    );
    assert!(contains(&p.third, "Subject: Café"));

    e.params.ret = Some(Ret::Full);
    let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let p = parse(&dsn);
    assert_eq!(p.types[2], "message/global");
    assert_eq!(p.nested_subject.as_deref(), Some("Café"));
}

#[test]
fn eight_bit_body_keeps_classic_types() {
    let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    e.params.ret = Some(Ret::Full);
    let original =
        "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve\r\n".as_bytes();
    let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    assert!(dsn.is_8bit());
    let p = parse(&dsn);
    assert_eq!(p.report_type.as_deref(), Some("delivery-status"));
    assert_eq!(p.types[2], "message/rfc822");
    assert!(contains(
        &dsn.message,
        "Content-Transfer-Encoding: 8bit\r\n"
    ));
}

#[test]
fn message_ids_and_boundaries_differ() {
    let e = env(
        "alice@example.org",
        vec![rcpt("bob@example.net"), rcpt("carol@example.net")],
    );
    let a = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let b = build(&e, ORIGINAL, &[1], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let c = build(&e, ORIGINAL, &[0], DsnKind::Delay, MTA, t(11, 0)).unwrap();
    let d = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 1)).unwrap();
    let ids: Vec<String> = [&a, &b, &c, &d]
        .iter()
        .map(|x| {
            MessageParser::default()
                .parse(&x.message)
                .unwrap()
                .message_id()
                .unwrap()
                .to_string()
        })
        .collect();
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            assert_ne!(ids[i], ids[j]);
        }
    }
}

#[test]
fn boundary_not_in_content() {
    let e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    let dsn = build(&e, ORIGINAL, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let m = MessageParser::default().parse(&dsn.message).unwrap();
    let boundary = m
        .content_type()
        .unwrap()
        .attribute("boundary")
        .unwrap()
        .to_string();
    // An original that contains exactly that boundary gets another one.
    let mut e2 = e.clone();
    e2.params.ret = Some(Ret::Full);
    let mut original = ORIGINAL.to_vec();
    original.extend_from_slice(format!("--{boundary}\r\n--{boundary}--\r\n").as_bytes());
    let dsn2 = build(&e2, &original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let m2 = MessageParser::default().parse(&dsn2.message).unwrap();
    let boundary2 = m2.content_type().unwrap().attribute("boundary").unwrap();
    assert_ne!(boundary, boundary2);
    assert!(boundary2.len() <= 70);
    let p = parse(&dsn2);
    assert!(contains(&p.third, &format!("--{boundary}--")));
}

#[test]
fn bare_line_endings_normalized() {
    let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    e.params.ret = Some(Ret::Full);
    let original = b"Subject: bare\nX-A: 1\r\nX-B: 2\r\rbody\nmore\rend";
    let dsn = build(&e, original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let p = parse(&dsn);
    assert_eq!(p.nested_subject.as_deref(), Some("bare"));
    assert!(contains(&dsn.message, "body\r\nmore\r\nend\r\n"));
}

#[test]
fn real_message_round_trips() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/stalwart-mail-parser/rfc-000.eml"
    );
    let original =
        std::fs::read(path).unwrap_or_else(|e| panic!("corpus message {path} is missing: {e}"));
    let want = MessageParser::default()
        .parse(&original)
        .expect("corpus message parses")
        .subject()
        .expect("corpus message has a subject")
        .to_string();
    let mut e = env("nsb@nsb.fv.com", vec![rcpt("ned@innosoft.com")]);
    e.params.ret = Some(Ret::Full);
    let dsn = build(&e, &original, &[0], DsnKind::Failure, MTA, t(11, 0)).unwrap();
    let p = parse(&dsn);
    assert_eq!(p.types[2], "message/rfc822");
    assert_eq!(p.nested_subject.as_deref(), Some(want.as_str()));
    let m = MessageParser::default().parse(&dsn.message).unwrap();
    let nested = m
        .parts
        .iter()
        .find_map(|part| match &part.body {
            PartType::Message(n) => Some(n),
            _ => None,
        })
        .unwrap();
    // The nested message keeps its own MIME structure.
    let ct = nested.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("mixed"));
    assert!(nested.parts.len() > 3);
}

#[test]
fn header_section_cases() {
    assert_eq!(
        header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
        b"A: 1\r\nB: 2\r\n"
    );
    assert_eq!(header_section(b"A: 1\nB: 2\n\nbody\n"), b"A: 1\nB: 2\n");
    assert_eq!(header_section(b"A: 1\r\nB: 2\r\n"), b"A: 1\r\nB: 2\r\n");
    assert_eq!(header_section(b"A: 1"), b"A: 1");
    assert_eq!(header_section(b"\r\nbody"), b"");
    assert_eq!(header_section(b""), b"");
}

#[test]
fn never_panics_and_lines_stay_valid() {
    // A small deterministic generator of hostile inputs.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: &[u8] = b"\r\n\r\n \t:;aZ9.-<>\"=_\x00\x7f\xc3\xa9\xff\x80smtpReceived--";
    for round in 0..300 {
        let len = (next() % 4000) as usize;
        let mut original = Vec::with_capacity(len);
        for _ in 0..len {
            let r = next();
            if r % 9 == 0 {
                // Long runs make overlong lines.
                let n = (r >> 8) as usize % 1500;
                original.extend(std::iter::repeat_n(b'x', n));
            } else {
                original.push(alphabet[(r >> 8) as usize % alphabet.len()]);
            }
        }
        let junk = |n: u64| -> String {
            let s = String::from_utf8_lossy(&original[..original.len().min(n as usize)]);
            s.into_owned()
        };
        let mut r = rcpt(&format!("u{round}@example.net"));
        r.diagnostic = Some(junk(next() % 2000));
        r.remote_mta = Some(junk(next() % 50));
        r.orcpt = Some(junk(next() % 80));
        r.status = Some(junk(next() % 6));
        r.notify = notify(true, true, true);
        let mut e = env("alice@example.org", vec![r]);
        e.id = junk(next() % 40);
        e.sender = format!("s{}", junk(next() % 40));
        e.params.envid = Some(junk(next() % 100));
        e.params.ret = if round % 2 == 0 {
            Some(Ret::Full)
        } else {
            None
        };
        let mta = junk(next() % 30);
        for kind in [DsnKind::Failure, DsnKind::Delay, DsnKind::Success] {
            let dsn = build(&e, &original, &[0, 5], kind, &mta, t(11, 0)).unwrap();
            check_lines(&dsn.message);
            let _ = parse(&dsn);
        }
        let _ = header_section(&original);
    }
}

#[test]
fn finding_09_what_a_dsn_returns_is_capped() {
    // RET=FULL of a message over the limit: its header section only.
    let mut e = env("alice@example.org", vec![rcpt("bob@example.net")]);
    e.params.ret = Some(Ret::Full);
    let mut big = ORIGINAL.to_vec();
    for _ in 0..2000 {
        big.extend_from_slice(b"SECRET-BODY-LINE and more of the same to fill it up\r\n");
    }
    let dsn = build_with_limit(&e, &big, &[0], DsnKind::Failure, MTA, t(11, 0), 10_000).unwrap();
    let p = parse(&dsn);
    assert_eq!(p.types[2], "text/rfc822-headers");
    assert!(!contains(&dsn.message, "SECRET-BODY-LINE"));
    assert!(p.text.contains("header section"), "{}", p.text);

    // A header section over the limit: cut after the last whole field.
    let mut headers = Vec::new();
    for i in 0..1000 {
        headers.extend_from_slice(
            format!("X-Filler-{i}: {}\r\n\tcontinued {i}\r\n", "f".repeat(60)).as_bytes(),
        );
    }
    let original = [headers.as_slice(), b"Subject: last\r\n\r\nbody\r\n"].concat();
    let mut r = rcpt("bob@example.net");
    r.notify = notify(true, false, false);
    let e = env("alice@example.org", vec![r]);
    let dsn =
        build_with_limit(&e, &original, &[0], DsnKind::Success, MTA, t(11, 0), 10_000).unwrap();
    let p = parse(&dsn);
    assert!(p.third.len() <= 10_000, "{} octets returned", p.third.len());
    assert!(p.third.len() > 9_000, "{} octets returned", p.third.len());
    let text = String::from_utf8_lossy(&p.third);
    let last = text
        .lines()
        .rfind(|l| l.starts_with("X-Filler-"))
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("X-Filler-")
        .to_string();
    assert!(
        text.contains(&format!("\tcontinued {last}")),
        "the last field is whole: {last}"
    );
    assert!(
        dsn.message.len() < 20_000,
        "{} octets in all",
        dsn.message.len()
    );

    // The default limit applies to `build`.
    let dsn = build(&e, &original, &[0], DsnKind::Success, MTA, t(11, 0)).unwrap();
    assert!(parse(&dsn).third.len() <= DEFAULT_RETURN_LIMIT);
}
