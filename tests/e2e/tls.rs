//! STARTTLS and implicit TLS with swaks, smtplib and a scripted raw client.

use crate::harness::{
    Sandbox, ServerConfig, Step, Stored, assert_bytes_eq, assert_envelope, corpus_file, crlf,
    queued_id_in, run_smtplib, run_swaks, run_tls_session,
};

const MESSAGE: &str = "From: <tls@example.org>
To: <b@example.com>
Subject: over TLS

.dot line
secret body";

/// Check the envelope's `client.tls`.
fn assert_tls(msg: &Stored, implicit: bool) {
    let env = &msg.envelope;
    let tls = &env["client"]["tls"];
    assert!(tls.is_object(), "envelope has client.tls: {env}");
    assert_eq!(tls["implicit"], implicit, "client.tls.implicit: {env}");
    let version = tls["version"].as_str().unwrap_or_default();
    assert!(version.starts_with("TLSv1"), "client.tls.version: {env}");
    assert!(
        tls["cipher"].as_str().is_some_and(|c| !c.is_empty()),
        "client.tls.cipher: {env}"
    );
}

#[test]
fn swaks_starttls_and_implicit_tls() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let file = sb.write("tls.eml", MESSAGE.as_bytes());
    let data_arg = format!("@{}", file.display());
    let mut want = crlf(MESSAGE);
    want.extend_from_slice(b"\r\n");

    for (mode, listener, implicit) in [("--tls", 0, false), ("--tlsc", 1, true)] {
        let out = run_swaks(
            server.addr(listener),
            &[
                mode,
                "--from",
                "tls@example.org",
                "--to",
                "b@example.com",
                "--helo",
                "tls.client.example",
                "--data",
                &data_arg,
            ],
        );
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "swaks {mode} failed ({}):\n{transcript}",
            out.status
        );
        let id = queued_id_in(&transcript)
            .unwrap_or_else(|| panic!("no queue id in swaks {mode} output:\n{transcript}"));
        let msg = sb.spool().read(&id);
        assert_bytes_eq(msg.body(), &want, mode);
        assert_envelope(
            &msg,
            "tls@example.org",
            &["b@example.com"],
            "tls.client.example",
        );
        assert_tls(&msg, implicit);
        assert_eq!(
            msg.envelope["client"]["listener"],
            server.addr(listener).to_string()
        );
    }
}

#[test]
fn smtplib_starttls_and_ssl() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let file = corpus_file("spamassassin/nice-crlf-endings.eml");
    let original = std::fs::read(&file).expect("read corpus file");
    for (flag, listener, implicit) in [("--starttls", 0, false), ("--ssl", 1, true)] {
        let report = run_smtplib(
            server.addr(listener),
            &[
                flag,
                "--from",
                "py@example.org",
                "--to",
                "b@example.com",
                "--file",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(report["data_reply"][0], 250, "{flag}: {report}");
        assert!(
            report["tls"].is_object(),
            "{flag}: the client saw TLS: {report}"
        );
        let features: Vec<&str> = report["features"]
            .as_array()
            .expect("features")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        assert!(
            !features.contains(&"starttls"),
            "{flag}: STARTTLS must not be offered inside TLS: {features:?}"
        );
        let id = report["data_reply"][1]
            .as_str()
            .unwrap()
            .split_once("queued as ")
            .unwrap()
            .1
            .trim()
            .to_string();
        let msg = sb.spool().read(&id);
        assert_bytes_eq(msg.body(), &original, flag);
        assert_envelope(
            &msg,
            "py@example.org",
            &["b@example.com"],
            "smtplib.client.example",
        );
        assert_tls(&msg, implicit);
        assert_eq!(
            msg.envelope["client"]["tls"]["version"],
            report["tls"]["version"].as_str().unwrap().replace('.', "_"),
            "the envelope names the negotiated version"
        );
    }
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let t = run_tls_session(
        server.addr(0),
        false,
        &[
            Step::Reply,
            Step::Send("EHLO injector.example\r\n".into()),
            Step::Reply,
            Step::Send("STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n".into()),
            Step::Reply,
            Step::Tls,
            Step::Idle(300),
            Step::Send("EHLO injector.example\r\n".into()),
            Step::Reply,
            Step::Send("NOOP\r\n".into()),
            Step::Reply,
            Step::Send("MAIL FROM:<ours@example.org>\r\n".into()),
            Step::Reply,
            Step::Send("QUIT\r\n".into()),
            Step::Reply,
        ],
    );
    assert!(
        t.error.is_none(),
        "dialog failed: {:?}; replies {:?}",
        t.error,
        t.replies
    );
    assert!(t.tls.is_some(), "TLS was negotiated");
    let r = &t.replies;
    assert_eq!(r.len(), 7, "{r:?}");
    assert!(
        r[1].keywords().iter().any(|k| k == "STARTTLS"),
        "STARTTLS offered in plaintext: {r:?}"
    );
    assert!(r[2].is("220 2.0.0"), "STARTTLS go-ahead: {r:?}");
    assert_eq!(
        t.idle,
        [""],
        "nothing arrives over TLS before we speak: {:?}",
        t.idle
    );
    assert_eq!(
        r[3].code, 250,
        "first reply over TLS answers our EHLO: {r:?}"
    );
    assert!(
        r[3].lines.len() > 1,
        "an EHLO reply, not a MAIL reply: {r:?}"
    );
    assert!(
        !r[3].keywords().iter().any(|k| k == "STARTTLS"),
        "no STARTTLS inside TLS: {r:?}"
    );
    assert!(r[4].is("250 2.0.0"), "NOOP: {r:?}");
    assert!(
        r[5].is("250 2.1.0"),
        "our MAIL is the first of the transaction (the injected one was discarded): {r:?}"
    );
    assert_eq!(r[6].code, 221, "QUIT: {r:?}");
    assert!(sb.spool().ids().is_empty());
}

#[test]
fn implicit_tls_raw_dialog() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    let body = "Subject: raw implicit\r\n\r\n..stuffed\r\nend\r\n";
    let t = run_tls_session(
        server.addr(1),
        true,
        &[
            Step::Reply,
            Step::Send("EHLO raw.example\r\n".into()),
            Step::Reply,
            Step::Send("STARTTLS\r\n".into()),
            Step::Reply,
            Step::Send("MAIL FROM:<raw@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n".into()),
            Step::Reply,
            Step::Reply,
            Step::Reply,
            Step::Send(format!("{body}.\r\nQUIT\r\n")),
            Step::Reply,
            Step::Reply,
        ],
    );
    assert!(
        t.error.is_none(),
        "dialog failed: {:?}; replies {:?}",
        t.error,
        t.replies
    );
    let r = &t.replies;
    assert_eq!(r.len(), 8, "{r:?}");
    assert!(r[0].is("220 mx.test.example"), "greeting over TLS: {r:?}");
    assert!(
        !r[1].keywords().iter().any(|k| k == "STARTTLS"),
        "no STARTTLS on an implicit TLS listener: {r:?}"
    );
    assert!(r[2].code >= 400, "STARTTLS inside TLS is refused: {r:?}");
    let codes: Vec<u16> = r[3..].iter().map(|x| x.code).collect();
    assert_eq!(codes, [250, 250, 354, 250, 221], "{r:?}");
    let id = r[6].queue_id().expect("queue id");
    let msg = sb.spool().read(&id);
    assert_bytes_eq(
        msg.body(),
        b"Subject: raw implicit\r\n\r\n.stuffed\r\nend\r\n",
        "implicit TLS message",
    );
    assert_tls(&msg, true);
}
