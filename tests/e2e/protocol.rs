//! Plain SMTP: real clients, pipelining, dot-stuffing, BDAT, limits, relay.

use std::time::Duration;

use crate::harness::{
    Sandbox, ServerConfig, SmtpConn, assert_bytes_eq, assert_envelope, assert_transaction_logged,
    corpus_file, crlf, queued_id_in, run_smtplib, run_swaks,
};

/// A message with lines that need dot-stuffing, without a final newline
/// (swaks adds the CRLF before the terminating dot).
const SWAKS_MESSAGE: &str = "From: Alice <alice@example.org>
To: Bob <bob@example.com>
Subject: swaks e2e
Message-ID: <swaks-e2e@example.org>

Hello Bob.
.a line that starts with a dot
..two dots
last line";

#[test]
fn greeting_and_ehlo_capabilities() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default().limit("max_message_size", "\"10MiB\""));
    let mut c = SmtpConn::connect(server.addr(0)).expect("connect");
    let greeting = c.reply();
    assert_eq!(
        greeting.last(),
        "220 mx.test.example ESMTP Sluice",
        "greeting"
    );

    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines[0].starts_with("250-mx.test.example"),
        "EHLO first line: {ehlo:?}"
    );
    let kw = ehlo.keywords();
    for want in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
        "HELP",
    ] {
        assert!(kw.iter().any(|k| k == want), "EHLO lacks {want}: {ehlo:?}");
    }
    let size = ehlo
        .lines
        .iter()
        .find_map(|l| l.get(4..).and_then(|l| l.strip_prefix("SIZE ")))
        .unwrap_or_else(|| panic!("SIZE without a value: {ehlo:?}"));
    assert_eq!(
        size.trim(),
        (10u64 << 20).to_string(),
        "SIZE advertises max_message_size"
    );

    let noop = c.expect("NOOP", 250);
    assert!(noop.is("250 2."), "NOOP carries an enhanced code: {noop:?}");
    let r = c.expect("MAIL FROM:<a@example.org> FROBNICATE=yes", 555);
    assert!(r.is("555 5.5.4"), "unknown MAIL parameter: {r:?}");
    c.expect("MAIL FROM:<a@example.org>", 250);
    let r = c.expect("RCPT TO:<b@example.com> FROBNICATE=yes", 555);
    assert!(r.is("555 5.5.4"), "unknown RCPT parameter: {r:?}");
    c.expect("RSET", 250);
    let big = c.cmd(&format!(
        "MAIL FROM:<a@example.org> SIZE={}",
        (10u64 << 20) + 1
    ));
    assert!(big.is("552 5.3.4"), "declared SIZE over the limit: {big:?}");
    let bye = c.expect("QUIT", 221);
    assert!(bye.is("221 2.0.0"), "QUIT: {bye:?}");
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "server closes after QUIT"
    );
}

#[test]
fn swaks_transaction_lands_byte_exact() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let file = sb.write("swaks.eml", SWAKS_MESSAGE.as_bytes());
    let data_arg = format!("@{}", file.display());
    let out = run_swaks(
        server.addr(0),
        &[
            "--from",
            "alice@example.org",
            "--to",
            "bob@example.com",
            "--helo",
            "client.example",
            "--data",
            &data_arg,
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed ({}):\n{transcript}",
        out.status
    );
    let id = queued_id_in(&transcript)
        .unwrap_or_else(|| panic!("no queue id in swaks output:\n{transcript}"));

    let msg = sb.spool().only_message();
    assert_eq!(
        msg.id, id,
        "the queue id in the reply names the spooled message"
    );
    let mut want = crlf(SWAKS_MESSAGE);
    want.extend_from_slice(b"\r\n");
    assert_bytes_eq(msg.body(), &want, "swaks message");
    assert_envelope(
        &msg,
        "alice@example.org",
        &["bob@example.com"],
        "client.example",
    );
    let env = &msg.envelope;
    assert_eq!(env["client"]["esmtp"], true, "{env}");
    assert_eq!(env["chunked"], false, "{env}");
    assert!(
        env["client"].get("tls").is_none(),
        "no tls key for a plain session: {env}"
    );
    assert!(
        env["client"].get("proxy").is_none(),
        "no proxy key without PROXY: {env}"
    );
    assert_eq!(
        env["client"]["listener"],
        server.addr(0).to_string(),
        "{env}"
    );
    let trace = String::from_utf8_lossy(msg.trace()).into_owned();
    assert!(
        trace.contains("mx.test.example"),
        "Received: names our host: {trace}"
    );
    assert!(
        sb.spool().tmp_files().is_empty(),
        "spool/tmp is empty after commit"
    );
    assert_transaction_logged(&server, &id, "alice@example.org");
}

#[test]
fn smtplib_corpus_messages_byte_exact() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    // CRLF messages sent as raw bytes (smtplib's sendmail path); the second
    // has lines that start with a dot, the third 8-bit content.
    let raw = [
        "flanker/complaints-aol.eml",
        "spamassassin/spam-bsmtp.eml",
        "sisimai-set-of-emails/dos-lhost-yandex-01.eml",
    ];
    for (i, rel) in raw.iter().enumerate() {
        let file = corpus_file(rel);
        let original = std::fs::read(&file).expect("read corpus file");
        let rcpt = format!("rcpt{i}@example.com");
        let report = run_smtplib(
            server.addr(0),
            &[
                "--from",
                "sender@example.org",
                "--to",
                &rcpt,
                "--file",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(report["data_reply"][0], 250, "{rel}: {report}");
        let id = report["data_reply"][1]
            .as_str()
            .and_then(|t| t.split_once("queued as "))
            .map(|(_, id)| id.trim().to_string())
            .unwrap_or_else(|| panic!("{rel}: no queue id in {report}"));
        let msg = sb.spool().read(&id);
        assert_bytes_eq(msg.body(), &original, rel);
        // smtplib declares SIZE; 8-bit content goes with BODY=8BITMIME.
        let params = &msg.envelope["params"];
        assert_eq!(
            params["size"].as_u64(),
            Some(original.len() as u64),
            "{rel}: {params}"
        );
        if original.iter().any(|b| *b > 127) {
            assert_eq!(params["body"], "8BITMIME", "{rel}: {params}");
        }
        assert_envelope(
            &msg,
            "sender@example.org",
            &[&rcpt],
            "smtplib.client.example",
        );
    }

    // send_message re-generates the message; the script reports the exact
    // DATA payload it sent.
    let file = corpus_file("rspamd/dmarc-good_dkim_rspamd.eml");
    let expect_path = sb.path().join("expected.eml");
    let report = run_smtplib(
        server.addr(0),
        &[
            "--from",
            "list@example.org",
            "--to",
            "one@example.com",
            "--to",
            "two@example.com",
            "--file",
            file.to_str().unwrap(),
            "--send-message",
            "--expect-out",
            expect_path.to_str().unwrap(),
        ],
    );
    assert_eq!(report["data_reply"][0], 250, "{report}");
    let id = report["data_reply"][1]
        .as_str()
        .unwrap()
        .split_once("queued as ")
        .unwrap()
        .1
        .trim()
        .to_string();
    let msg = sb.spool().read(&id);
    let want = std::fs::read(&expect_path).expect("read expected payload");
    assert_bytes_eq(msg.body(), &want, "send_message payload");
    assert_envelope(
        &msg,
        "list@example.org",
        &["one@example.com", "two@example.com"],
        "smtplib.client.example",
    );
    assert_eq!(
        sb.spool().ids().len(),
        raw.len() + 1,
        "one spooled message per send"
    );
}

#[test]
fn pipelined_transaction() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let mut c = SmtpConn::ehlo(server.addr(0), "pipeliner.example");
    c.write("MAIL FROM:<pipe@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    let replies: Vec<_> = (0..4).map(|_| c.reply()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [250, 250, 250, 354],
        "pipelined replies: {replies:?}"
    );
    assert!(replies[0].is("250 2.1.0"), "{replies:?}");
    assert!(replies[1].is("250 2.1.5"), "{replies:?}");

    let body = crlf("Subject: pipelined\n\nbody line\n");
    let mut wire = body.clone();
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    c.write(&wire);
    let done = c.reply();
    let id = done
        .queue_id()
        .unwrap_or_else(|| panic!("after the dot: {done:?}"));
    let bye = c.reply();
    assert_eq!(bye.code, 221, "QUIT: {bye:?}");

    let msg = sb.spool().only_message();
    assert_eq!(msg.id, id);
    assert_bytes_eq(msg.body(), &body, "pipelined message");
    assert_envelope(
        &msg,
        "pipe@example.org",
        &["b@example.com", "c@example.com"],
        "pipeliner.example",
    );
}

#[test]
fn dot_unstuffing() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    // HELO, not EHLO: the envelope records a non-ESMTP session.
    let mut c = SmtpConn::open(server.addr(0));
    c.expect("HELO dots.example", 250);
    c.expect("MAIL FROM:<dots@example.org>", 250);
    c.expect("RCPT TO:<b@example.com>", 250);
    c.expect("DATA", 354);
    // As sent (stuffed) and as it must be stored.
    c.write(
        b"Subject: dots\r\n\r\n..leading\r\n...two\r\n..\r\n....\r\nmid.dle.\r\n. space\r\n.\r\n",
    );
    let r = c.reply();
    let id = r
        .queue_id()
        .unwrap_or_else(|| panic!("after the dot: {r:?}"));
    let msg = sb.spool().read(&id);
    assert_bytes_eq(
        msg.body(),
        b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\n...\r\nmid.dle.\r\n space\r\n",
        "unstuffed message",
    );
    assert_envelope(&msg, "dots@example.org", &["b@example.com"], "dots.example");
    assert_eq!(msg.envelope["client"]["esmtp"], false, "{}", msg.envelope);
}

#[test]
fn bdat_chunks_byte_exact() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let mut c = SmtpConn::ehlo(server.addr(0), "chunker.example");

    // Stop and wait, with a CRLF split across chunks and dot lines kept
    // as they are (BDAT has no dot-stuffing).
    let chunks: [&[u8]; 3] = [
        b"Subject: chunked\r\nX-Part: 1\r",
        b"\n\r\n.not stuffed\r\n..\r\nsecond chunk\r\n",
        b".\r\nthird and last\r\n",
    ];
    c.expect("MAIL FROM:<bdat@example.org>", 250);
    c.expect("RCPT TO:<b@example.com>", 250);
    let mut first_id = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut wire = format!(
            "BDAT {}{}\r\n",
            chunk.len(),
            if last { " LAST" } else { "" }
        )
        .into_bytes();
        wire.extend_from_slice(chunk);
        c.write(&wire);
        let r = c.reply();
        assert_eq!(r.code, 250, "BDAT chunk {i}: {r:?}");
        if last {
            first_id = r.queue_id();
        } else {
            // RFC 3030 leaves the count open (this chunk or the total so far).
            assert!(
                r.is("250 2.0.0") && r.last().contains("octets"),
                "chunk reply: {r:?}"
            );
        }
    }
    let first_id = first_id.expect("BDAT LAST names a queue id");
    let want: Vec<u8> = chunks.concat();
    let msg = sb.spool().read(&first_id);
    assert_bytes_eq(msg.body(), &want, "BDAT message");
    assert_eq!(msg.envelope["chunked"], true, "{}", msg.envelope);
    assert_envelope(
        &msg,
        "bdat@example.org",
        &["b@example.com"],
        "chunker.example",
    );

    // Fully pipelined: every chunk in one write, ending with BDAT 0 LAST.
    let body = crlf("Subject: pipelined chunks\n\nline one\nline two\n");
    let (a, b) = body.split_at(20);
    let mut wire = b"MAIL FROM:<bdat2@example.org>\r\nRCPT TO:<c@example.com>\r\n".to_vec();
    wire.extend_from_slice(format!("BDAT {}\r\n", a.len()).as_bytes());
    wire.extend_from_slice(a);
    wire.extend_from_slice(format!("BDAT {}\r\n", b.len()).as_bytes());
    wire.extend_from_slice(b);
    wire.extend_from_slice(b"BDAT 0 LAST\r\n");
    c.write(&wire);
    let replies: Vec<_> = (0..5).map(|_| c.reply()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250; 5], "pipelined BDAT replies: {replies:?}");
    let id = replies[4]
        .queue_id()
        .unwrap_or_else(|| panic!("BDAT 0 LAST: {replies:?}"));
    let msg = sb.spool().read(&id);
    assert_bytes_eq(msg.body(), &body, "pipelined BDAT message");
    assert_eq!(msg.envelope["chunked"], true);
    assert_eq!(sb.spool().ids().len(), 2);
}

#[test]
fn long_command_line_then_noop() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let mut c = SmtpConn::ehlo(server.addr(0), "long.example");
    let mut line = vec![b'X'; 100 * 1024];
    line.extend_from_slice(b"\r\n");
    c.write(&line);
    let r = c.reply();
    assert!(r.is("500 5.5.2"), "100 KB command line: {r:?}");
    let noop = c.expect("NOOP", 250);
    assert!(noop.is("250 2.0.0"), "{noop:?}");
    // The session is still fully usable.
    let body = crlf("Subject: after a long line\n\nok\n");
    let done = c.send_mail("long@example.org", &["b@example.com"], &body);
    assert!(done.queue_id().is_some(), "{done:?}");
}

#[test]
fn client_dropping_mid_data_leaves_nothing() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let mut c = SmtpConn::ehlo(server.addr(0), "dropper.example");
    c.expect("MAIL FROM:<drop@example.org>", 250);
    c.expect("RCPT TO:<b@example.com>", 250);
    c.expect("DATA", 354);
    c.write(crlf("Subject: never finished\n\nhalf a body\n").repeat(200));
    c.abort();

    // The server must not store it; prove the server has moved on by
    // finishing another transaction, then look at the spool.
    let mut d = SmtpConn::ehlo(server.addr(0), "after.example");
    let body = crlf("Subject: complete\n\ndone\n");
    let done = d.send_mail("ok@example.org", &["b@example.com"], &body);
    let id = done.queue_id().unwrap_or_else(|| panic!("{done:?}"));
    d.expect("QUIT", 221);
    let spool = sb.spool();
    let msg = spool.only_message();
    assert_eq!(msg.id, id, "only the completed message is spooled");
    assert_eq!(msg.envelope["sender"], "ok@example.org");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !spool.tmp_files().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        spool.tmp_files().is_empty(),
        "spool/tmp: {:?}",
        spool.tmp_files()
    );
    assert_eq!(
        spool.queue_files().len(),
        2,
        "queue: {:?}",
        spool.queue_files()
    );
}

#[test]
fn relay_denied_outside_relay_networks() {
    let sb = Sandbox::new();
    let cfg = ServerConfig {
        relay_networks: vec!["10.99.0.0/16".into()],
        ..ServerConfig::default()
    };
    let server = sb.start(&cfg);
    let mut c = SmtpConn::ehlo(server.addr(0), "outsider.example");
    c.expect("MAIL FROM:<someone@elsewhere.example>", 250);
    let denied = c.cmd("RCPT TO:<victim@foreign.example>");
    assert!(
        denied.is("554 5.7.1"),
        "foreign recipient from outside relay_networks: {denied:?}"
    );
    let local = c.expect("RCPT TO:<postmaster@EXAMPLE.com>", 250);
    assert!(local.is("250 2.1.5"), "{local:?}");
    c.expect("DATA", 354);
    let body = crlf("Subject: inbound\n\nfor a local user\n");
    c.write([body.as_slice(), b".\r\n"].concat());
    let done = c.reply();
    assert!(done.queue_id().is_some(), "{done:?}");
    let msg = sb.spool().only_message();
    assert_eq!(
        msg.recipients().len(),
        1,
        "only the local recipient: {}",
        msg.envelope
    );
    assert!(
        msg.recipients()[0].eq_ignore_ascii_case("postmaster@example.com"),
        "{}",
        msg.envelope
    );
    assert_bytes_eq(msg.body(), &body, "inbound message");

    // A transaction whose only recipient was refused stores nothing.
    c.expect("MAIL FROM:<someone@elsewhere.example>", 250);
    let denied = c.cmd("RCPT TO:<victim@foreign.example>");
    assert!(denied.is("554 5.7.1"), "{denied:?}");
    let data = c.cmd("DATA");
    assert!(data.code >= 500, "DATA without recipients: {data:?}");
    assert_eq!(sb.spool().ids().len(), 1);
}

#[test]
fn connection_cap_per_ip() {
    let sb = Sandbox::new();
    // Relay clients are exempt from the per-address cap: this client is
    // not one.
    let cfg = ServerConfig {
        relay_networks: vec!["192.0.2.0/24".into()],
        ..ServerConfig::default()
    };
    let server = sb.start(&cfg.limit("max_connections_per_ip", "2"));
    let addr = server.addr(0);
    let mut first = SmtpConn::open(addr);
    let _second = SmtpConn::open(addr);
    let mut third = SmtpConn::connect(addr).expect("connect");
    let r = third.reply();
    assert!(r.is("421 4.3.2"), "third concurrent connection: {r:?}");
    assert!(
        third.closed_within(Duration::from_secs(5)),
        "the refused connection is closed"
    );

    // A slot frees up when a client leaves.
    first.expect("QUIT", 221);
    assert!(first.closed_within(Duration::from_secs(5)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = SmtpConn::connect(addr).expect("connect");
        let r = again.reply();
        if r.code == 220 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slot after a client left: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn global_connection_cap() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default().limit("max_connections", "1"));
    let _first = SmtpConn::open(server.addr(0));
    let mut second = SmtpConn::connect(server.addr(0)).expect("connect");
    let r = second.reply();
    assert!(r.is("421 4.3.2"), "connection over max_connections: {r:?}");
    assert!(
        second.closed_within(Duration::from_secs(5)),
        "the refused connection is closed"
    );
}
