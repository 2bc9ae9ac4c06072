//! The SMTP session state machine fed any byte stream, in chunks the input
//! chooses, with every check accepted and every message stored: it never
//! panics, every reply is well formed, and the replies are the same
//! however the stream is cut (pipelining must not change the protocol).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::{Action, Session, SessionConfig, Verdict};

/// Run a session over `input` cut into chunks of the given sizes; returns
/// every octet it sent (TLS is refused: STARTTLS is not offered).
fn run(input: &[u8], cuts: &[u8]) -> Vec<u8> {
    let cfg = SessionConfig {
        hostname: "mx.fuzz.example".into(),
        max_message_size: 4096,
        max_session_bytes: 1 << 20,
        starttls_available: false,
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg, false);
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    // Each action either consumes input or moves the session on; the
    // bound only stops a livelock from hanging the fuzzer.
    for _ in 0..100_000 {
        match s.next_action() {
            Action::Send(reply) => {
                assert!((200..600).contains(&reply.code), "{reply:?}");
                let wire = reply.to_wire();
                assert!(wire.ends_with(b"\r\n") && !wire.is_empty());
                out.extend_from_slice(&wire);
            }
            Action::StartTls => panic!("STARTTLS was not offered"),
            Action::Check(_) => s.answer(Verdict::Accept),
            Action::Store(tx) => {
                assert!(!tx.recipients.is_empty(), "a message with no recipient");
                s.stored(Ok("QUEUEID".into()));
            }
            Action::Done(_) => {}
            Action::NeedInput => {
                if at >= input.len() {
                    s.eof();
                    continue;
                }
                let n = if cuts.is_empty() {
                    input.len()
                } else {
                    usize::from(cuts[i % cuts.len()]).max(1)
                };
                i += 1;
                let end = (at + n).min(input.len());
                s.feed(&input[at..end]);
                at = end;
            }
            Action::Close => return out,
        }
    }
    panic!("the session neither closed nor waited after 100,000 actions");
}

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let (cuts, stream) = rest.split_at(usize::from(k % 8).min(rest.len()));
    let whole = run(stream, &[]);
    let cut = run(stream, cuts);
    assert_eq!(
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&cut),
        "the replies depend on how the input was cut"
    );
});
