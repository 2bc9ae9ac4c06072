//! The policy message resource's parse of any message: every accessor a
//! policy can call answers, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    sluice::policy::fuzzing::message(raw);
    let scan = sluice::smtp::header::scan(raw, 64 * 1024, 1000);
    assert!(scan.bytes <= raw.len());
    let _ = sluice::smtp::header::fields(raw);
});
