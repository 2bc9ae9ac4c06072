//! The client side of the protocol, sans-IO, beside the server side: what
//! the outbound client (in the delivery box, `delivery/client/`) reads and writes.
//!
//! - [`ReplyParser`]: replies from the server, multi-line, with enhanced
//!   status codes, bounded in line length and line count;
//! - [`Extensions`]: the EHLO/LHLO keywords;
//! - [`DataEncoder`]: the message as it goes out after `DATA` —
//!   dot-stuffed, every line ending made CRLF (no bare LF ever leaves:
//!   SMTP smuggling defence on the outbound side), ended by `CRLF.CRLF`.

mod ehlo;
mod encode;
mod reply;

pub use ehlo::Extensions;
pub use encode::{DataEncoder, dot_stuff};
pub use reply::{MAX_REPLY_LINE, MAX_REPLY_LINES, ReplyError, ReplyParser};
