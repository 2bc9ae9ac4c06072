//! SMTP smuggling (CVE-2023-51764/5/6): end of data is CRLF.CRLF and
//! nothing else, so a second message can never be hidden inside DATA.

use std::thread;
use std::time::Duration;

use crate::harness::{Sandbox, ServerConfig, SmtpConn};

/// The false end-of-data sequences an attacker may try, with the reply the
/// message must get.
const VARIANTS: [(&str, &[u8], &str); 5] = [
    ("LF.LF", b"\n.\n", "550 5.6.11"),
    ("LF.CRLF", b"\n.\r\n", "550 5.6.11"),
    ("CRLF.LF", b"\r\n.\n", "550 5.6.11"),
    ("CR.CR", b"\r.\r", "550 5.6.11"),
    ("CRLF NUL.CRLF", b"\r\n\x00.\r\n", "550 5.6.0"),
];

const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n";

/// The DATA content: a first part, the false terminator, the smuggled
/// transaction and the real CRLF.CRLF.
fn payload(sep: &[u8]) -> Vec<u8> {
    [
        b"Subject: smuggling test\r\n\r\nfirst part".as_slice(),
        sep,
        SMUGGLED,
    ]
    .concat()
}

#[test]
fn smuggling_variants_are_refused() {
    let sb = Sandbox::new();
    let server = sb.start(&ServerConfig::default());
    for (name, sep, want) in VARIANTS {
        // Once in one write, once split around the false terminator so the
        // server's reader sees it at a read boundary.
        for split in [false, true] {
            let what = format!("{name} (split: {split})");
            let mut c = SmtpConn::ehlo(server.addr(0), "smuggler.example");
            c.expect("MAIL FROM:<sender@example.org>", 250);
            c.expect("RCPT TO:<rcpt@example.com>", 250);
            c.expect("DATA", 354);
            let data = payload(sep);
            if split {
                let at = b"Subject: smuggling test\r\n\r\nfirst part".len();
                let (head, tail) = data.split_at(at + 1);
                c.write(head);
                thread::sleep(Duration::from_millis(30));
                c.write(tail);
            } else {
                c.write(&data);
            }
            let r = c.reply();
            assert!(r.is(want), "{what}: want {want}, got {r:?}");
            // The next reply must answer our NOOP: nothing of the smuggled
            // commands was executed.
            let noop = c.cmd("NOOP");
            assert!(
                noop.is("250 2.0.0"),
                "{what}: NOOP after the refusal: {noop:?}"
            );
            assert!(
                c.pending().is_empty(),
                "{what}: stray replies {:?}",
                String::from_utf8_lossy(c.pending())
            );
            c.expect("QUIT", 221);
            assert!(
                sb.spool().ids().is_empty(),
                "{what}: the spool has messages: {:?}",
                sb.spool().ids()
            );
        }
    }
    assert!(
        sb.spool().queue_files().is_empty(),
        "{:?}",
        sb.spool().queue_files()
    );
    let refused = server.log_records("transaction");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = refused;
    while refused.len() < 2 * VARIANTS.len() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        refused = server.log_records("transaction");
    }
    assert_eq!(
        refused.len(),
        2 * VARIANTS.len(),
        "one transaction log line per refused message: {refused:?}"
    );
    for r in &refused {
        let result = r["fields"]["result"].as_str().unwrap_or_default();
        assert!(result.starts_with("550 5.6."), "logged result: {r}");
    }
    assert!(
        refused
            .iter()
            .all(|r| r["fields"].get("queue_id").is_none_or(|q| q.is_null())),
        "no refused transaction has a queue id: {refused:?}"
    );
}
