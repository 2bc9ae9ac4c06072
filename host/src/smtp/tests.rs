//! Session tests: a script of client bytes is run through a [`Session`]
//! whole and split at every byte boundary; the replies must be the same
//! every time.

use super::*;

/// A tiny driver: answers checks with `rules`, stores every message.
struct Driver {
    out: Vec<u8>,
    stored: Vec<Transaction>,
    checks: Vec<Check>,
    closed: bool,
    tls_handshakes: usize,
}

fn relay_rule(c: &Check) -> Verdict {
    match c {
        Check::Rcpt { to, .. } if to.domain_name().as_deref() == Some("outside.example") => {
            Verdict::Reject(reply::std_replies::relay_denied())
        }
        Check::MailFrom { from, .. } if from.to_string() == "tempfail@example.com" => {
            Verdict::Reject(Reply::new(451, Enhanced(4, 7, 1), "try later"))
        }
        _ => Verdict::Accept,
    }
}

fn run_chunks(cfg: &SessionConfig, tls: bool, chunks: &[&[u8]]) -> Driver {
    let mut s = Session::new(cfg.clone(), tls);
    let mut d = Driver {
        out: Vec::new(),
        stored: Vec::new(),
        checks: Vec::new(),
        closed: false,
        tls_handshakes: 0,
    };
    let mut input = chunks.iter();
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 1_000_000, "session loops");
        match s.next_action() {
            Action::Send(r) => r.write_to(&mut d.out),
            Action::Check(c) => {
                let v = relay_rule(&c);
                d.checks.push(c);
                s.answer(v);
            }
            Action::Store(t) => {
                let id = format!("Q{}", d.stored.len() + 1);
                d.stored.push(*t);
                s.stored(Ok(id));
            }
            Action::StartTls => {
                d.tls_handshakes += 1;
                d.out.extend_from_slice(b"<TLS>\r\n");
                s.tls_started();
            }
            Action::Done(_) => {}
            Action::NeedInput => match input.next() {
                Some(c) => s.feed(c),
                None => {
                    s.eof();
                }
            },
            Action::Close => {
                d.closed = true;
                return d;
            }
        }
    }
}

/// Run `input` whole, then split at every boundary (and byte by byte),
/// asserting identical results; returns the whole run.
fn run(cfg: &SessionConfig, input: &[u8]) -> Driver {
    let whole = run_chunks(cfg, false, &[input]);
    let splits: Vec<usize> = if input.len() > 3000 {
        (0..=input.len()).step_by(97).collect()
    } else {
        (0..=input.len()).collect()
    };
    for cut in splits {
        let d = run_chunks(cfg, false, &[&input[..cut], &input[cut..]]);
        assert_eq!(
            String::from_utf8_lossy(&d.out),
            String::from_utf8_lossy(&whole.out),
            "split at {cut}"
        );
        assert_eq!(d.stored, whole.stored, "split at {cut}");
    }
    if input.len() <= 3000 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let d = run_chunks(cfg, false, &bytes);
        assert_eq!(d.out, whole.out, "byte by byte");
        assert_eq!(d.stored, whole.stored, "byte by byte");
    }
    whole
}

fn codes(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| {
            // "250 2.1.0 ..." -> "250 2.1.0"; "354 End" -> "354"
            let mut parts = l.splitn(3, ' ');
            let code = parts.next().unwrap_or("");
            match parts.next() {
                Some(e)
                    if e.chars().next().is_some_and(|c| c.is_ascii_digit()) && e.contains('.') =>
                {
                    format!("{code} {e}")
                }
                _ => code.to_string(),
            }
        })
        .collect()
}

const HEAD: &str = "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n";

#[test]
fn basic_transaction_pipelined() {
    let input = format!("{HEAD}DATA\r\nSubject: hi\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n");
    let d = run(&SessionConfig::default(), input.as_bytes());
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert_eq!(d.stored.len(), 1);
    assert_eq!(d.stored[0].body, b"Subject: hi\r\n\r\nbody\r\n.dot\r\n");
    assert_eq!(d.stored[0].recipients[0].to.to_string(), "r@example.com");
    assert!(d.closed);
}

#[test]
fn ehlo_advertises_extensions() {
    let d = run(&SessionConfig::default(), b"EHLO c.example\r\n");
    let text = String::from_utf8_lossy(&d.out);
    for ext in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(text.contains(&format!("250-{ext}\r\n")), "{ext} in {text}");
    }
    let tls = run_chunks(&SessionConfig::default(), true, &[b"EHLO c.example\r\n"]);
    assert!(!String::from_utf8_lossy(&tls.out).contains("STARTTLS"));
}

#[test]
fn sequence_errors() {
    let input = b"MAIL FROM:<a@example.com>\r\nEHLO x.example\r\nRCPT TO:<r@example.com>\r\nDATA\r\nMAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\nDATA\r\nRSET\r\nBDAT 3 LAST\r\nabcNOOP\r\n";
    let d = run(&SessionConfig::default(), input);
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "503 5.5.1",
            "250",
            "503 5.5.1",
            "503 5.5.1",
            "250 2.1.0",
            "503 5.5.1",
            "554 5.5.1",
            "250 2.0.0",
            "503 5.5.1",
            "250 2.0.0"
        ]
    );
    assert!(d.stored.is_empty());
}

#[test]
fn relay_denied_and_tempfail() {
    let input = b"EHLO x.example\r\nMAIL FROM:<tempfail@example.com>\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<r@outside.example>\r\nDATA\r\n";
    let d = run(&SessionConfig::default(), input);
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "250",
            "451 4.7.1",
            "250 2.1.0",
            "554 5.7.1",
            "554 5.5.1"
        ]
    );
}

#[test]
fn size_declared_too_big() {
    let input = b"EHLO x.example\r\nMAIL FROM:<a@example.com> SIZE=52428801\r\nMAIL FROM:<a@example.com> SIZE=52428800\r\n";
    let d = run(&SessionConfig::default(), input);
    assert_eq!(codes(&d.out), ["220", "250", "552 5.3.4", "250 2.1.0"]);
}

#[test]
fn message_too_big_is_read_to_the_end() {
    let cfg = SessionConfig {
        max_message_size: 10,
        ..SessionConfig::default()
    };
    let input = format!("{HEAD}DATA\r\n0123456789abcdef\r\n.\r\nNOOP\r\n");
    let d = run(&cfg, input.as_bytes());
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "552 5.3.4",
            "250 2.0.0"
        ]
    );
    assert!(d.stored.is_empty());
}

#[test]
fn recipient_limit() {
    let cfg = SessionConfig {
        max_recipients: 2,
        ..SessionConfig::default()
    };
    let input = b"EHLO x.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<1@example.com>\r\nRCPT TO:<2@example.com>\r\nRCPT TO:<3@example.com>\r\n";
    let d = run(&cfg, input);
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3"
        ]
    );
}

#[test]
fn smuggling_variants_never_yield_a_second_message() {
    let smuggled =
        "MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n";
    for sep in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r\n\x00.\r\n"] {
        let input = format!("{HEAD}DATA\r\nfirst{sep}{smuggled}.\r\nNOOP\r\n");
        let d = run(&SessionConfig::default(), input.as_bytes());
        assert!(d.stored.is_empty(), "{sep:?} stored a message");
        let c = codes(&d.out);
        assert_eq!(c.len(), 7, "{sep:?}: {c:?}");
        assert!(c[5].starts_with("550 5.6."), "{sep:?}: {c:?}");
        assert_eq!(c[6], "250 2.0.0", "{sep:?}: the session goes on");
        // Only one MAIL FROM was ever checked: the smuggled one was body.
        assert_eq!(
            d.checks
                .iter()
                .filter(|c| matches!(c, Check::MailFrom { .. }))
                .count(),
            1
        );
    }
}

#[test]
fn long_line_is_refused_without_buffering() {
    let cfg = SessionConfig::default();
    let mut s = Session::new(cfg, false);
    assert!(matches!(s.next_action(), Action::Check(Check::Connect)));
    s.answer(Verdict::Accept);
    assert!(matches!(s.next_action(), Action::Send(_)));
    for _ in 0..100 {
        s.feed(&[b'A'; 1024]);
        assert!(matches!(s.next_action(), Action::NeedInput));
        assert!(s.buffered() < 2048, "buffer grew to {}", s.buffered());
    }
    s.feed(b"\r\nNOOP\r\n");
    match s.next_action() {
        Action::Send(r) => assert_eq!((r.code, r.enhanced), (500, Some(Enhanced(5, 5, 2)))),
        a => panic!("{a:?}"),
    }
    match s.next_action() {
        Action::Send(r) => assert_eq!(r.code, 250),
        a => panic!("{a:?}"),
    }
}

#[test]
fn line_limit_is_exact() {
    // 510 octets + CRLF = 512: accepted; one more: refused.
    let ok = format!("NOOP {}\r\n", "x".repeat(505));
    let bad = format!("NOOP {}\r\n", "x".repeat(506));
    assert_eq!(ok.len(), 512);
    let d = run(
        &SessionConfig::default(),
        format!("{ok}{bad}NOOP\r\n").as_bytes(),
    );
    assert_eq!(
        codes(&d.out),
        ["220", "250 2.0.0", "500 5.5.2", "250 2.0.0"]
    );
}

#[test]
fn too_many_bad_commands_closes() {
    let cfg = SessionConfig {
        max_bad_commands: 3,
        ..SessionConfig::default()
    };
    let d = run(&cfg, b"X\r\nX\r\nX\r\nX\r\nNOOP\r\n");
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "500 5.5.1",
            "500 5.5.1",
            "500 5.5.1",
            "500 5.5.1",
            "421 4.7.0"
        ]
    );
    assert!(d.closed);
}

#[test]
fn unknown_parameters_and_smtputf8() {
    let input = "EHLO x.example\r\nMAIL FROM:<a@example.com> XYZ=1\r\nMAIL FROM:<ü@example.com>\r\nMAIL FROM:<ü@example.com> SMTPUTF8\r\nRCPT TO:<a@example.com> NOTIFY=MAYBE\r\nRCPT TO:<ö@例え.jp>\r\n";
    let d = run(&SessionConfig::default(), input.as_bytes());
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "250",
            "555 5.5.4",
            "553 5.6.7",
            "250 2.1.0",
            "501 5.5.4",
            "250 2.1.5"
        ]
    );
    let input = "EHLO x.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<ö@example.com>\r\n";
    let d = run(&SessionConfig::default(), input.as_bytes());
    assert_eq!(codes(&d.out)[3], "553 5.6.7");
}

#[test]
fn bdat_in_chunks() {
    let input = format!("{HEAD}BDAT 5\r\nHelloBDAT 9\r\n, world\r\nBDAT 0 LAST\r\nQUIT\r\n");
    let d = run(&SessionConfig::default(), input.as_bytes());
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.0.0",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert_eq!(d.stored.len(), 1);
    assert_eq!(d.stored[0].body, b"Hello, world\r\n");
    assert!(d.stored[0].chunked);
}

#[test]
fn bdat_binary_bytes_look_like_commands() {
    // Chunk content that looks like SMTP commands is content.
    let body = "MAIL FROM:<x@y.example>\r\n.\r\n";
    let input = format!("{HEAD}BDAT {} LAST\r\n{body}NOOP\r\n", body.len());
    let d = run(&SessionConfig::default(), input.as_bytes());
    assert_eq!(d.stored.len(), 1);
    assert_eq!(d.stored[0].body, body.as_bytes());
    assert_eq!(codes(&d.out).last().map(String::as_str), Some("250 2.0.0"));
}

#[test]
fn bdat_refused_chunk_is_consumed() {
    let input = b"EHLO x.example\r\nBDAT 11 LAST\r\nRSET\r\nRSETXNOOP\r\n";
    let d = run(&SessionConfig::default(), input);
    assert_eq!(codes(&d.out), ["220", "250", "503 5.5.1", "250 2.0.0"]);
}

#[test]
fn bdat_bare_lf_refused() {
    let input = format!("{HEAD}BDAT 5\r\na\nb\r\nBDAT 0 LAST\r\n");
    let d = run(&SessionConfig::default(), input.as_bytes());
    let c = codes(&d.out);
    assert_eq!(c[4], "550 5.6.11");
    assert_eq!(c[5], "503 5.5.1");
    assert!(d.stored.is_empty());
}

#[test]
fn bdat_too_big() {
    let cfg = SessionConfig {
        max_message_size: 4,
        ..SessionConfig::default()
    };
    let input = format!("{HEAD}BDAT 6 LAST\r\n123456NOOP\r\n");
    let d = run(&cfg, input.as_bytes());
    assert_eq!(codes(&d.out)[4..], ["552 5.3.4", "250 2.0.0"]);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let input = b"EHLO x.example\r\nSTARTTLS\r\nMAIL FROM:<injected@example.com>\r\n";
    let d = run_chunks(
        &SessionConfig::default(),
        false,
        &[
            input,
            b"EHLO again.example\r\nMAIL FROM:<a@example.com>\r\n",
        ],
    );
    let text = String::from_utf8_lossy(&d.out);
    assert_eq!(d.tls_handshakes, 1);
    assert!(text.contains("220 2.0.0 Ready to start TLS\r\n<TLS>"));
    assert!(!d.checks.iter().any(
        |c| matches!(c, Check::MailFrom { from, .. } if from.to_string().starts_with("injected"))
    ));
    assert_eq!(codes(&d.out)[3..], ["250", "250 2.1.0"]);
}

#[test]
fn starttls_state_reset_and_no_second_starttls() {
    let d = run_chunks(
        &SessionConfig::default(),
        false,
        &[
            b"EHLO x.example\r\nSTARTTLS\r\n",
            b"MAIL FROM:<a@example.com>\r\nEHLO x.example\r\nSTARTTLS\r\n",
        ],
    );
    let c = codes(&d.out);
    assert_eq!(c[3], "503 5.5.1", "MAIL before a fresh EHLO after TLS");
    assert_eq!(c[5], "503 5.5.1", "second STARTTLS");
}

#[test]
fn shutdown_idle_gets_421() {
    let mut s = Session::new(SessionConfig::default(), false);
    assert!(matches!(s.next_action(), Action::Check(_)));
    s.answer(Verdict::Accept);
    assert!(matches!(s.next_action(), Action::Send(_)));
    assert!(matches!(s.next_action(), Action::NeedInput));
    s.shutdown();
    match s.next_action() {
        Action::Send(r) => assert_eq!((r.code, r.enhanced), (421, Some(Enhanced(4, 3, 0)))),
        a => panic!("{a:?}"),
    }
    assert!(matches!(s.next_action(), Action::Close));
}

#[test]
fn shutdown_lets_data_finish() {
    let mut s = Session::new(SessionConfig::default(), false);
    let mut out = Vec::new();
    let mut stored = 0;
    let mut fed = false;
    loop {
        match s.next_action() {
            Action::Check(_) => s.answer(Verdict::Accept),
            Action::Send(r) => out.push(r.code),
            Action::Store(_) => {
                stored += 1;
                s.stored(Ok("Q".into()));
            }
            Action::NeedInput if !fed => {
                s.feed(format!("{HEAD}DATA\r\npart").as_bytes());
                fed = true;
            }
            Action::NeedInput => {
                assert!(s.in_data());
                s.shutdown();
                s.feed(b" two\r\n.\r\nNOOP\r\n");
            }
            Action::Done(_) | Action::StartTls => {}
            Action::Close => break,
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(out, [220, 250, 250, 250, 354, 250, 421]);
}

#[test]
fn session_byte_limit() {
    let cfg = SessionConfig {
        max_session_bytes: 20,
        ..SessionConfig::default()
    };
    let d = run_chunks(
        &cfg,
        false,
        &[b"NOOP\r\nNOOP\r\n", b"NOOP\r\nNOOP\r\nNOOP\r\n"],
    );
    assert_eq!(
        codes(&d.out),
        ["220", "250 2.0.0", "250 2.0.0", "421 4.7.0"]
    );
}

#[test]
fn vrfy_help_noop_rset() {
    let d = run(
        &SessionConfig::default(),
        b"VRFY bob\r\nHELP\r\nNOOP\r\nRSET\r\nEXPN list\r\n",
    );
    assert_eq!(
        codes(&d.out),
        [
            "220",
            "252 2.5.2",
            "214 2.0.0",
            "250 2.0.0",
            "250 2.0.0",
            "502 5.5.1"
        ]
    );
}

#[test]
fn helo_then_mail_works_and_lf_only_commands() {
    let d = run(
        &SessionConfig::default(),
        b"HELO x.example\nMAIL FROM:<a@example.com>\nRCPT TO:<b@example.com>\nDATA\n",
    );
    assert_eq!(
        codes(&d.out),
        ["220", "250", "250 2.1.0", "250 2.1.5", "354"]
    );
}

#[test]
fn duplicate_recipients_are_merged() {
    let input = format!("{HEAD}RCPT TO:<r@example.com>\r\nDATA\r\nx\r\n.\r\n");
    let d = run(&SessionConfig::default(), input.as_bytes());
    assert_eq!(d.stored[0].recipients.len(), 1);
}

#[test]
fn session_byte_limit_applies_inside_data() {
    let cfg = SessionConfig {
        max_session_bytes: 200,
        ..SessionConfig::default()
    };
    let body = "x".repeat(300);
    let input = format!("{HEAD}DATA\r\n{body}");
    let d = run_chunks(&cfg, false, &[input.as_bytes(), b"\r\n.\r\n"]);
    assert_eq!(codes(&d.out).last().map(String::as_str), Some("421 4.7.0"));
    assert!(d.stored.is_empty());
}

/// A cheap deterministic fuzz: random mixes of valid commands, junk and
/// line endings must never panic, never loop, and never buffer more than
/// one read plus one line.
#[test]
fn random_input_never_panics() {
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: &[&[u8]] = &[
        b"EHLO a.example\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"RCPT TO:<b@outside.example>\r\n",
        b"DATA\r\n",
        b"BDAT 7\r\n",
        b"BDAT 3 LAST\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"\n.\n",
        b"\r",
        b"\n",
        b"\x00",
        b"STARTTLS\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"..x\r\n",
        b"<>\"@[]:",
    ];
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..(rnd() % 40) {
            if rnd() % 5 == 0 {
                let n = (rnd() % 600) as usize;
                input.extend((0..n).map(|_| (rnd() % 256) as u8));
            } else {
                input.extend_from_slice(pieces[(rnd() % pieces.len() as u64) as usize]);
            }
        }
        let cut = (rnd() as usize) % (input.len() + 1);
        let cfg = SessionConfig {
            max_bad_commands: 1000,
            ..SessionConfig::default()
        };
        let d = run_chunks(&cfg, false, &[&input[..cut], &input[cut..]]);
        assert!(d.closed);
    }
}
