//! `MockMessage`: real corpus messages read through the `Message` API.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_guest::{Header, MockMessage, PartInfo};

fn corpus(path: &str) -> MockMessage {
    let full = format!(
        "{}/../../../shared/corpus/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    MockMessage::from_file(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn multipart_with_two_image_attachments() {
    let mock = corpus("cpython-email/msg_22.eml");
    let msg = mock.message();
    assert_eq!(msg.size() as usize, mock.as_bytes().len());
    assert_eq!(msg.from(), ["b@example.com"]);
    assert_eq!(msg.to(), ["a@example.com"]);
    assert_eq!(msg.subject(), None);
    assert_eq!(msg.header("mime-version"), ["1.0"]);
    assert_eq!(
        msg.headers(2),
        [
            Header::new("MIME-Version", "1.0"),
            Header::new("Message-ID", "<a05001902b7f1c33773e9@[134.84.183.138]>"),
        ]
    );
    let parts = msg.parts(10);
    let summary: Vec<_> = parts
        .iter()
        .map(|p| {
            (
                p.content_type.as_str(),
                p.filename.as_deref(),
                p.is_attachment,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("text/plain", None, false),
            ("image/jpeg", Some("wibble.JPG"), true),
            ("image/jpeg", Some("wibble2.JPG"), true),
            ("text/plain", None, false),
        ]
    );
    assert!(parts[1].size > 0, "decoded size of the JPEG");
    assert_eq!(msg.parts(1).len(), 1, "bounded by max");
    assert_eq!(msg.text(10_000), "Text text text.\nText text text.");
}

#[test]
fn executable_attachment() {
    let mock = corpus("rspamd/exe_attm.eml");
    let msg = mock.message();
    assert_eq!(
        msg.subject().as_deref(),
        Some("test Sat, 26 Jan 2019 12:04:58 +0100")
    );
    let exe: Vec<PartInfo> = msg
        .parts(100)
        .into_iter()
        .filter(|p| p.filename.as_deref().is_some_and(|f| f.ends_with(".exe")))
        .collect();
    assert_eq!(exe.len(), 1);
    assert!(exe[0].is_attachment);
    assert_eq!(exe[0].content_type, "application/octet-stream");
    assert_eq!(
        msg.first_header("return-path").as_deref(),
        Some("root@srv.example.com")
    );
}

#[test]
fn encoded_attachment_name_and_bounded_reads() {
    let mock = corpus("mikel-mail/attachment_emails-attachment_with_encoded_name.eml");
    let msg = mock.message();
    let names: Vec<_> = msg
        .parts(10)
        .into_iter()
        .filter_map(|p| p.filename)
        .collect();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| !n.contains("=?")),
        "decoded: {names:?}"
    );
    // raw: bounded, and empty past the end.
    assert_eq!(msg.raw(0, 5), mock.as_bytes()[..5].to_vec());
    assert_eq!(msg.raw(msg.size(), 10), Vec::<u8>::new());
    assert_eq!(msg.raw(u32::MAX, u32::MAX), Vec::<u8>::new());
    assert_eq!(msg.raw(0, u32::MAX).len(), mock.as_bytes().len());
}

#[test]
fn many_attachments_are_bounded() {
    let mock = corpus("php-mime-mail-parser/issue408.eml");
    let msg = mock.message();
    let all = msg.parts(u32::MAX);
    assert!(all.len() > 300, "{} parts", all.len());
    assert_eq!(msg.parts(20).len(), 20);
    assert_eq!(msg.headers(3).len(), 3);
}

#[test]
fn text_is_cut_at_a_character_boundary() {
    let mock = MockMessage::parse(
        "Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n",
    );
    let msg = mock.message();
    assert_eq!(msg.text(3), "Gr", "'ü' is two octets and does not fit");
    assert_eq!(msg.text(4), "Grü");
    assert_eq!(msg.text(0), "");
}

#[test]
fn html_only_body_becomes_text() {
    let mock = MockMessage::parse(
        "Content-Type: text/html\r\n\r\n<html><body><p>Hello <b>there</b></p></body></html>\r\n",
    );
    let text = mock.message().text(1000);
    assert!(text.contains("Hello") && !text.contains("<b>"), "{text:?}");
}

#[test]
fn garbage_never_panics() {
    for raw in [
        &b""[..],
        b"\r\n\r\n",
        b"no colon here",
        b"\xff\xfe\x00garbage:\r\n x",
        b":\r\n",
    ] {
        let mock = MockMessage::parse(raw);
        let msg = mock.message();
        assert_eq!(msg.size() as usize, raw.len());
        let _ = (
            msg.headers(10),
            msg.header("x"),
            msg.subject(),
            msg.from(),
            msg.to(),
        );
        let _ = (msg.parts(10), msg.text(10), msg.raw(0, 10));
    }
}

#[test]
fn every_corpus_message_parses_without_panicking() {
    let root = format!("{}/../../../shared/corpus", env!("CARGO_MANIFEST_DIR"));
    let index = std::fs::read_to_string(format!("{root}/CATEGORIES.tsv")).unwrap();
    let mut count = 0;
    for line in index.lines().skip(1) {
        let Some(path) = line.split('\t').next() else {
            continue;
        };
        let Ok(mock) = MockMessage::from_file(format!("{root}/{path}")) else {
            continue;
        };
        let msg = mock.message();
        let _ = (msg.headers(1000), msg.subject(), msg.from(), msg.to());
        let _ = (msg.parts(1000), msg.text(1 << 20));
        count += 1;
    }
    assert!(count > 100, "only {count} corpus messages read");
}

#[test]
fn a_message_that_trips_a_parser_debug_assertion_reads_as_unparsed() {
    // mail-parser 0.11.9 hits a `debug_assert!` on this 5-level nested
    // message in debug builds; the mock must not panic.
    let mock = corpus("spamassassin/nice-mime9.eml");
    let msg = mock.message();
    assert_eq!(msg.size(), 28213);
    assert_eq!(msg.raw(0, 4), b"From");
}
