//! The message at the data stage: [`Message`] reads the host-owned,
//! already parsed message through bounded calls (in a component), or a
//! `MockMessage` (in native tests).

use std::fmt;

use crate::types::{Header, PartInfo};

/// Most octets [`Message::raw`] returns per call (the host's limit too).
pub const RAW_MAX: u32 = 1 << 20;

#[cfg(target_arch = "wasm32")]
type Backend<'a> = &'a crate::wasm::HostMessage;
#[cfg(not(target_arch = "wasm32"))]
type Backend<'a> = &'a crate::mock::MockMessage;

/// The message methods, as implemented by the host's resource (wasm32)
/// and by `MockMessage` (natively).
pub(crate) trait MessageSource {
    fn size(&self) -> u32;
    fn header(&self, name: &str) -> Vec<String>;
    fn headers(&self, max: u32) -> Vec<Header>;
    fn subject(&self) -> Option<String>;
    fn from(&self) -> Vec<String>;
    fn to(&self) -> Vec<String>;
    fn parts(&self, max: u32) -> Vec<PartInfo>;
    fn text(&self, max_bytes: u32) -> String;
    fn raw(&self, offset: u32, len: u32) -> Vec<u8>;
}

/// One received message, handed to [`Policy::on_data`](crate::Policy::on_data).
///
/// The host owns the message and parsed it once; every method is a cheap
/// call that returns only what was asked for, so a policy never copies a
/// large body unless it asks for it with a bound. Results are also bounded
/// by the SDK (at most `max` items, at most `max_bytes` octets), whatever
/// the host returns.
///
/// ```
/// # #[cfg(not(target_arch = "wasm32"))] {
/// use sluice_guest::MockMessage;
/// let mock = MockMessage::parse(b"From: Ann <ann@example.com>\r\nSubject: hi\r\n\r\nHello\r\n");
/// let msg = mock.message();
/// assert_eq!(msg.subject().as_deref(), Some("hi"));
/// assert_eq!(msg.from(), ["ann@example.com"]);
/// assert_eq!(msg.text(3), "Hel");
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct Message<'a> {
    backend: Backend<'a>,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// Cut `text` to at most `max_bytes` octets at a character boundary.
pub(crate) fn truncate_str(mut text: String, max_bytes: u32) -> String {
    let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn bound<T>(mut items: Vec<T>, max: u32) -> Vec<T> {
    items.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    items
}

impl<'a> Message<'a> {
    pub(crate) fn new(backend: Backend<'a>) -> Self {
        Message { backend }
    }

    /// Total size in octets, as received.
    #[must_use]
    pub fn size(&self) -> u32 {
        MessageSource::size(self.backend)
    }

    /// Values of every header field called `name` (case-insensitive), in
    /// order, unfolded and decoded (RFC 2047) to UTF-8. Empty when absent.
    #[must_use]
    pub fn header(&self, name: &str) -> Vec<String> {
        MessageSource::header(self.backend, name)
    }

    /// The first value of the header field `name`, if any.
    #[must_use]
    pub fn first_header(&self, name: &str) -> Option<String> {
        self.header(name).into_iter().next()
    }

    /// Every header field in order, raw values (unfolded, undecoded); at
    /// most `max` fields.
    #[must_use]
    pub fn headers(&self, max: u32) -> Vec<Header> {
        bound(MessageSource::headers(self.backend, max), max)
    }

    /// The decoded Subject, when present.
    #[must_use]
    pub fn subject(&self) -> Option<String> {
        MessageSource::subject(self.backend)
    }

    /// Addresses of the From header field.
    #[must_use]
    pub fn from(&self) -> Vec<String> {
        MessageSource::from(self.backend)
    }

    /// Addresses of the To and Cc header fields.
    #[must_use]
    pub fn to(&self) -> Vec<String> {
        MessageSource::to(self.backend)
    }

    /// The MIME parts (leaves of the structure), at most `max`.
    #[must_use]
    pub fn parts(&self, max: u32) -> Vec<PartInfo> {
        bound(MessageSource::parts(self.backend, max), max)
    }

    /// The decoded text bodies (text/plain, or text/html converted to text
    /// when there is no plain one), concatenated, at most `max_bytes`
    /// octets (cut at a character boundary).
    #[must_use]
    pub fn text(&self, max_bytes: u32) -> String {
        truncate_str(MessageSource::text(self.backend, max_bytes), max_bytes)
    }

    /// Raw octets of the message from `offset`, at most `len` and at most
    /// [`RAW_MAX`] (1 MiB) per call; empty past the end.
    #[must_use]
    pub fn raw(&self, offset: u32, len: u32) -> Vec<u8> {
        let len = len.min(RAW_MAX);
        bound(MessageSource::raw(self.backend, offset, len), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation() {
        assert_eq!(truncate_str("héllo".into(), 2), "h");
        assert_eq!(truncate_str("héllo".into(), 3), "hé");
        assert_eq!(truncate_str("héllo".into(), 0), "");
        assert_eq!(truncate_str("abc".into(), 10), "abc");
        assert_eq!(bound(vec![1, 2, 3], 2), [1, 2]);
    }
}
