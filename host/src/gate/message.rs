//! The built-in rules for a message at the end of DATA, before any policy
//! reads it: a bounded header section, and no mail loop. Refusing here,
//! while the client is still connected, is what keeps the gateway from
//! sending backscatter: a looping message accepted now would only bounce
//! to a sender who may be forged.

use crate::smtp::reply::std_replies;
use crate::smtp::{Reply, header};

/// Bounds on a message's header section, and the loop limit.
#[derive(Debug, Clone)]
pub struct MessageRules {
    /// Most octets in the header section.
    pub max_header_size: usize,
    /// Most header fields.
    pub max_header_fields: usize,
    /// Most `Received:` fields once ours is added (the queue's loop limit).
    pub max_received: usize,
}

impl MessageRules {
    /// The reply refusing `body` (as received, before our `Received:`), or
    /// `None` when it may go on to the policies. The cost is bounded by the
    /// limits, whatever the message holds.
    pub fn check(&self, body: &[u8]) -> Option<Reply> {
        let fields_bound = self.max_header_fields.max(self.max_received);
        let s = header::scan(body, self.max_header_size, fields_bound);
        if s.bytes > self.max_header_size {
            return Some(std_replies::header_too_big());
        }
        if s.fields > self.max_header_fields {
            return Some(std_replies::too_many_header_fields());
        }
        // Ours makes one more.
        if s.received + 1 > self.max_received {
            return Some(std_replies::mail_loop(s.received));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_loops() {
        let r = MessageRules {
            max_header_size: 1024,
            max_header_fields: 10,
            max_received: 3,
        };
        assert_eq!(r.check(b"Subject: x\r\n\r\nbody"), None);
        let big = [b"X: ".as_slice(), &[b'a'; 2000], b"\r\n\r\n"].concat();
        assert_eq!(r.check(&big).map(|r| r.code), Some(552));
        assert_eq!(r.check(&b"a: b\r\n".repeat(11)).map(|r| r.code), Some(552));
        let two = b"Received: a\r\nReceived: b\r\n\r\n";
        assert_eq!(r.check(two), None);
        let three = b"Received: a\r\nReceived: b\r\nreceived: c\r\n\r\n";
        let refused = r.check(three).expect("a loop");
        assert_eq!(
            (refused.code, refused.enhanced.map(|e| e.to_string())),
            (554, Some("5.4.6".into()))
        );
    }
}
