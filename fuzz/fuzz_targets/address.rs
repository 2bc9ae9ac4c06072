//! The address parsers on any text: an address or an error, never a
//! panic; what parses prints back to something that parses to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::address::{parse_domain, parse_forward_path, parse_mailbox, parse_reverse_path};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(path) = parse_reverse_path(text) {
        // Null prints as nothing, so "<{path}>" is "<>" for it too.
        let again = parse_reverse_path(&format!("<{path}>"));
        assert_eq!(
            again.as_ref().ok(),
            Some(&path),
            "{text:?} printed as {path}"
        );
    }
    if let Ok(mailbox) = parse_forward_path(text) {
        let again = parse_forward_path(&format!("<{mailbox}>"));
        assert_eq!(
            again.as_ref().ok(),
            Some(&mailbox),
            "{text:?} printed as {mailbox}"
        );
    }
    let _ = parse_mailbox(text);
    let _ = parse_domain(text);
});
