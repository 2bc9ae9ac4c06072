//! The DATA reader on any byte stream, fed in chunks the input chooses:
//! the same message, size, defect and terminator position however the
//! stream is cut, and never more kept than the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::data::DataReader;

/// Feed `input` in chunks of the given sizes (cycled); returns where the
/// terminator ended (if it came) and the outcome.
fn read(input: &[u8], cuts: &[u8], max: u64) -> (Option<usize>, sluice::smtp::data::DataOutcome) {
    let mut r = DataReader::new(max);
    let mut at = 0;
    let mut i = 0;
    let mut end = None;
    while at < input.len() {
        let n = if cuts.is_empty() {
            input.len()
        } else {
            usize::from(cuts[i % cuts.len()]).max(1)
        };
        i += 1;
        let chunk = &input[at..(at + n).min(input.len())];
        let (used, done) = r.feed(chunk);
        assert!(used <= chunk.len());
        at += used;
        if done {
            end = Some(at);
            break;
        }
        assert_eq!(used, chunk.len(), "a reader not done takes all it is given");
    }
    (end, r.finish())
}

fuzz_target!(|input: &[u8]| {
    // The first octets choose the cuts and the size limit.
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let (cuts, stream) = rest.split_at(usize::from(k % 8).min(rest.len()));
    let max = 1 + u64::from(k) * 7;
    let (end_whole, whole) = read(stream, &[], max);
    let (end_cut, cut) = read(stream, cuts, max);
    assert_eq!(end_whole, end_cut);
    assert_eq!(whole.body, cut.body);
    assert_eq!(whole.size, cut.size);
    assert_eq!(format!("{:?}", whole.defect), format!("{:?}", cut.defect));
    assert!(whole.body.len() as u64 <= max);
    assert!(whole.body.len() as u64 <= whole.size);
});
