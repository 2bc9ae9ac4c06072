//! The SMTP command parser on any line: a command or a reply, never a
//! panic, and a refusal is a well-formed error reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::command::parse;

fuzz_target!(|line: &[u8]| {
    if let Err(reply) = parse(line) {
        assert!(
            (400..600).contains(&reply.code),
            "a refused command gets an error reply: {reply:?}"
        );
        let wire = reply.to_wire();
        assert!(wire.ends_with(b"\r\n"), "{wire:?}");
    }
});
