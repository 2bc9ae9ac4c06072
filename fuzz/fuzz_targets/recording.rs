//! The recording reader on any line: a checked record or an error, never a
//! panic; a record it accepts writes back to a line it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::record::schema::SessionRecord;

fuzz_target!(|input: &[u8]| {
    let Ok(line) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(record) = SessionRecord::from_line(line) {
        let again = SessionRecord::from_line(&record.to_line());
        assert!(again.is_ok(), "{again:?}");
    }
});
