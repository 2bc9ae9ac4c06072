//! The fuzz targets' way into the message resource (`fuzz/`), built only
//! with `--cfg fuzzing`: the parse is crate-private, as a policy reaches it
//! through the WIT `message` resource alone.

use std::sync::Arc;

use super::message::ParsedMessage;

/// Parse `raw` as the data stage does and ask every question a policy can
/// ask of it.
pub fn message(raw: &[u8]) {
    let m = ParsedMessage::parse(Arc::from(raw));
    assert_eq!(m.size() as usize, raw.len().min(u32::MAX as usize));
    let names: Vec<String> = m.headers(1000).map(|(n, _)| n.to_string()).collect();
    for name in names.iter().take(50) {
        let values = m.header(name);
        assert!(
            !values.is_empty(),
            "a field listed by headers() is found by name"
        );
    }
    let _ = (m.subject(), m.from(), m.to());
    let _ = m.parts(100).count();
    let text = m.text(4096);
    assert!(text.len() <= 4096);
    let chunk = m.raw(3, 100);
    assert!(chunk.len() <= 100);
}
